"""Run folders shared by the report tests (made once: training is the slow part)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reports.helpers import make_bench, make_run, scene_folder


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """Tiny models on a shared CPU: one torch thread (see `tests.conftest.one_torch_thread`)."""


@pytest.fixture(scope="session")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A scene folder, a bench folder (concat and image over seeds 0 and 1, with probes) and a
    separate train run (concat, seed 0, selection on val for 4 epochs)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("reports")
        folder = scene_folder(root / "data")
        bench = make_bench(root / "bench", folder, probes=True)
        run = make_run(root / "run", folder, epochs=4)
    finally:
        torch.set_num_threads(before)
    return {"root": root, "data": folder.root, "bench": bench, "run": run}
