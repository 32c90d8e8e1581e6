"""The command line stays argument parsing: a command builds a config and calls the library.

Sizes are counted from the ``def`` line to the last line, the flag declarations included; the body
(after the docstring) is held tighter, since that is where logic would creep back in.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import skyfuse.cli

CLI = Path(skyfuse.cli.__file__).parent
#: ~60 lines: `train` declares 47 flags, one line each, before a 13-line body
MAX_FUNCTION_LINES = 70
MAX_BODY_LINES = 40


def _functions() -> list[tuple[str, ast.FunctionDef]]:
    found = []
    for path in sorted(CLI.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found += [
            (f"{path.name}:{n.name}", n) for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)
        ]
    return found


def _body_start(node: ast.FunctionDef) -> int:
    first = node.body[0]
    is_doc = isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant)
    return node.body[1].lineno if is_doc and len(node.body) > 1 else first.lineno


@pytest.mark.parametrize(
    ("name", "node"), _functions(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_cli_functions_stay_small(name: str, node: ast.FunctionDef) -> None:
    assert node.end_lineno is not None
    total = node.end_lineno - node.lineno + 1
    body = node.end_lineno - _body_start(node) + 1
    assert total <= MAX_FUNCTION_LINES, f"{name}: {total} lines; move the logic into the library"
    assert body <= MAX_BODY_LINES, f"{name}: a {body}-line body; move the logic into the library"
