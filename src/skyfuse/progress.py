"""Progress reporting owned by the core: a tiny protocol, a no-op reporter and a replaceable default.

Why here and not in the CLI: long library jobs (feature extraction, pixel caching, captioning) report
progress, but library code must not import the command line. Library functions take
``progress: bool | ProgressReporter``: a reporter of the caller's own, True for the process default, or
False for none. The default is the no-op reporter until someone installs a factory with
`set_default_progress` (the CLI installs its rich bar when ``skyfuse.cli.common`` is imported).

A reporter is the small subset of ``rich.progress.Progress`` the library uses, so a rich ``Progress``
is one as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class ProgressReporter(Protocol):
    """What library code calls: enter/exit around the job, one task per stage, advances and updates."""

    def __enter__(self) -> Any: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any: ...

    def add_task(self, description: str, *, total: float | None = ..., **fields: Any) -> Any: ...

    def advance(self, task_id: Any, advance: float = ...) -> None: ...

    def update(self, task_id: Any, **fields: Any) -> None: ...


class NullProgress:
    """A reporter that reports nothing (the default outside the CLI)."""

    def __enter__(self) -> NullProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, description: str, *, total: float | None = None, **fields: Any) -> int:
        return 0

    def advance(self, task_id: Any, advance: float = 1) -> None:
        return None

    def update(self, task_id: Any, **fields: Any) -> None:
        return None


ProgressFactory = Callable[[], ProgressReporter]

_default_factory: ProgressFactory | None = None


def set_default_progress(factory: ProgressFactory | None) -> ProgressFactory | None:
    """Install the factory that ``progress=True`` uses (None: no-op); returns the previous one."""
    global _default_factory
    previous = _default_factory
    _default_factory = factory
    return previous


def resolve_progress(progress: bool | ProgressReporter | None) -> ProgressReporter:
    """A reporter for a library call: the caller's own, a fresh default one (True) or the no-op one."""
    if progress is None or progress is False:
        return NullProgress()
    if progress is True:
        return _default_factory() if _default_factory is not None else NullProgress()
    if not isinstance(progress, ProgressReporter):
        raise TypeError(
            f"progress must be a bool or a ProgressReporter (add_task/advance/update), got {type(progress).__name__}"
        )
    return progress
