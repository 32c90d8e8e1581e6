"""Shared test set-up: offline, single-threaded torch, and the real data beside the checkout."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import typer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("SKYFUSE_NO_DOWNLOAD", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SKYFUSE_SHARED_DATA", REPO.parent / "shared" / "data"))


def pytest_configure(config: pytest.Config) -> None:
    try:
        import torch

        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    except ImportError:  # pragma: no cover
        pass


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data; the calling test is skipped when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not present: {path}")
    return path


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"real data not present: {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One torch thread for the test: tiny models on a shared, busy CPU run far faster without
    OpenMP contention and spin-waits. Areas with only tiny models use it through an autouse fixture."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def cli_app(*modules: ModuleType) -> typer.Typer:
    """A Typer app with only the verbs of the given `skyfuse.cli` modules, so a CLI test does not
    depend on the other command modules importing cleanly."""
    application = typer.Typer()

    @application.callback()
    def _root() -> None:
        pass

    for module in modules:
        module.register(application)
    return application
