"""The `skyfuse` command line: one Typer application, one module per group of verbs.

Each module in this package exposes ``register(app)``; heavy imports (torch, transformers) happen inside
the commands so that ``skyfuse --help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys

import typer

from skyfuse.cli.common import console, fail

app = typer.Typer(
    name="skyfuse",
    help="Remote sensing scene classification with VLM captions and dual cross-attention fusion.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

#: CLI modules, in the order their verbs appear in --help. A module missing here is simply skipped.
COMMAND_MODULES = (
    "data",
    "caption",
    "features",
    "train",
    "zeroshot",
    "report",
    "predict",
    "serve",
    "demo",
)


def _register_all() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"skyfuse.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"skyfuse.cli.{name}":
                continue
            raise
        module.register(app)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    if version:
        from skyfuse import __version__

        console.print(f"skyfuse {__version__}")
        raise typer.Exit()


_register_all()


def main() -> None:
    """Console-script entry point: typed errors become one line on stderr and exit status 2."""
    from skyfuse.errors import SkyfuseError

    try:
        app(standalone_mode=True)
    except SkyfuseError as exc:  # pragma: no cover - typer usually lets these through to here
        fail(str(exc))
    except KeyboardInterrupt:  # pragma: no cover
        console.print("[yellow]interrupted[/yellow]")
        sys.exit(130)


__all__ = ["app", "main"]
