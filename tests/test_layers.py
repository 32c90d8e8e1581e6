"""Layering: library code never imports the command line; the data layer does not know the encoders.

Progress reporting is the core's (`skyfuse.progress`): library callers pass their own reporter or none,
and the CLI installs its rich bar as the default.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import skyfuse
from skyfuse.progress import NullProgress, ProgressReporter, resolve_progress, set_default_progress

SRC = Path(skyfuse.__file__).parent


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports, at any depth (lazy imports inside functions included)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.lineno, node.module)]
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return found


def _offenders(files: list[Path], banned: str) -> list[str]:
    return [
        f"{p.relative_to(SRC)}:{line} imports {mod}"
        for p in files
        for line, mod in _imports(p)
        if mod == banned or mod.startswith(banned + ".")
    ]


def test_library_code_does_not_import_the_cli() -> None:
    entry = SRC / "__main__.py"  # `python -m skyfuse` is the command line's own entry point
    files = [p for p in SRC.rglob("*.py") if "cli" not in p.relative_to(SRC).parts and p != entry]
    assert len(files) > 50
    assert _offenders(files, "skyfuse.cli") == []


def test_data_layer_does_not_import_encoders() -> None:
    files = list((SRC / "data").rglob("*.py"))
    assert _offenders(files, "skyfuse.encoders") == []
    from skyfuse.data.preprocess import ImagePreprocess
    from skyfuse.encoders.base import ImagePreprocess as Reexported

    assert Reexported is ImagePreprocess  # the encoders still offer it under the old name


def test_importing_the_library_loads_no_cli() -> None:
    code = (
        "import sys, skyfuse.data.pixelcache, skyfuse.encoders.features, skyfuse.captioning.runner;"
        "print(sorted(m for m in sys.modules if m.startswith('skyfuse.cli')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"


class Recorder(NullProgress):
    def __init__(self) -> None:
        self.tasks: dict[int, dict[str, Any]] = {}
        self.entered = 0

    def __enter__(self) -> Recorder:
        self.entered += 1
        return self

    def add_task(self, description: str, *, total: float | None = None, **fields: Any) -> int:
        self.tasks[len(self.tasks)] = {"name": description, "total": total, "done": 0}
        return len(self.tasks) - 1

    def advance(self, task_id: Any, advance: float = 1) -> None:
        self.tasks[task_id]["done"] += advance

    def update(self, task_id: Any, **fields: Any) -> None:
        if "completed" in fields:
            self.tasks[task_id]["done"] = fields["completed"]


@pytest.fixture
def scenes(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for cls in ("field", "lake"):
        (tmp_path / "s" / cls).mkdir(parents=True)
        for i in range(3):
            arr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / "s" / cls / f"{i}.png")
    return tmp_path / "s"


def test_library_callers_pass_their_own_reporter(scenes: Path, tmp_path: Path) -> None:
    from skyfuse.captioning import caption_folder, create_captioner
    from skyfuse.data.folder import SceneFolder
    from skyfuse.data.pixelcache import build_pixel_cache
    from skyfuse.data.preprocess import ImagePreprocess

    rec = Recorder()
    pre = ImagePreprocess(16, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "exact")
    build_pixel_cache(
        SceneFolder(scenes).samples, tmp_path / "px", preprocess=pre, show_progress=rec
    )
    assert rec.tasks[0] == {"name": "caching pixels", "total": 6, "done": 6}
    rec2 = Recorder()
    caption_folder(scenes, create_captioner("attributes"), tmp_path / "c.jsonl", progress=rec2)
    assert rec2.entered == 1 and rec2.tasks[0]["total"] == 6 and rec2.tasks[0]["done"] == 6


def test_default_reporter_is_none_until_installed() -> None:
    previous = set_default_progress(None)
    try:
        assert isinstance(resolve_progress(True), NullProgress)
        assert isinstance(resolve_progress(False), NullProgress)
        rec = Recorder()
        set_default_progress(lambda: rec)
        assert resolve_progress(True) is rec
        assert isinstance(rec, ProgressReporter)
        with pytest.raises(TypeError, match="ProgressReporter"):
            resolve_progress("yes")  # type: ignore[arg-type]
    finally:
        set_default_progress(previous)


def test_the_cli_installs_its_rich_bar() -> None:
    from rich.progress import Progress

    import skyfuse.cli.common  # noqa: F401

    assert isinstance(resolve_progress(True), Progress)


def test_the_command_line_loads_without_torch() -> None:
    """`skyfuse --help` stays fast: registering every command imports neither torch nor the library."""
    import subprocess
    import sys

    code = "import sys, skyfuse.cli; print('torch' in sys.modules, 'lightning' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
