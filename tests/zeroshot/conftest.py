"""One torch thread for these tests: tiny models on a shared CPU run far faster without thread contention."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """Every test in this folder runs single-threaded (see `tests.conftest.one_torch_thread`)."""
