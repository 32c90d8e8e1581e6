"""Shared CLI helpers: consoles, one-line errors, progress bars."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import rich.markup
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(soft_wrap=True)  # log lines stay whole when piped (no wrap at 80 columns)
err_console = Console(stderr=True, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one line on stderr and exit; the message names the file and the fix."""
    # the message is plain text: "[mlflow]" in "pip install 'skyfuse[mlflow]'" is not markup
    err_console.print(
        f"[bold red]error:[/bold red] {rich.markup.escape(message)}",
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(code)


def friendly_errors(func: F) -> F:
    """Turn `SkyfuseError` (and a few well-understood OS errors) into one line instead of a traceback."""
    from skyfuse.errors import SkyfuseError

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SkyfuseError as exc:
            fail(str(exc))
        except FileNotFoundError as exc:
            fail(f"{exc.filename}: not found; check the path")
        except PermissionError as exc:
            fail(f"{exc.filename}: permission denied; fix the permissions or choose another path")
        except IsADirectoryError as exc:
            fail(f"{exc.filename}: is a folder where a file is expected; give a file path")
        except FileExistsError as exc:
            fail(f"{exc.filename}: already exists and is in the way; choose another path")
        except NotADirectoryError as exc:
            fail(f"{exc.filename}: part of this path is a file, not a folder; choose another path")
        except OSError as exc:
            if exc.filename is None:
                raise
            fail(
                f"{exc.filename}: {exc.strerror or exc}; check the path, free space and permissions"
            )

    return wrapper  # type: ignore[return-value]


class RateColumn(ProgressColumn):
    """Items per second."""

    def render(self, task: Task) -> str:  # type: ignore[override]
        speed = task.finished_speed or task.speed
        return f"{speed:,.1f}/s" if speed else "-/s"


class ExtraColumn(ProgressColumn):
    """Free text set with ``progress.update(task, extra=...)`` (e.g. failure counts)."""

    def render(self, task: Task) -> str:  # type: ignore[override]
        return str(task.fields.get("extra", ""))


def progress(transient: bool = False) -> Progress:
    """The standard progress bar: done / total, rate, elapsed, ETA (on stderr, off when not a TTY)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        ExtraColumn(),
        console=err_console,
        transient=transient,
        disable=_QUIET or (not sys.stderr.isatty() and not _force_progress()),
    )


_QUIET = False


def set_quiet(quiet: bool) -> None:
    """``--quiet``: every progress bar of this process stays off (scripts, CI logs)."""
    global _QUIET
    _QUIET = quiet


def _install_default_progress() -> None:
    """Library calls made with ``progress=True`` get the CLI's rich bar (`skyfuse.progress`)."""
    from skyfuse.progress import set_default_progress

    set_default_progress(progress)


def _force_progress() -> bool:
    import os

    return os.environ.get("SKYFUSE_PROGRESS", "") == "1"


_install_default_progress()
