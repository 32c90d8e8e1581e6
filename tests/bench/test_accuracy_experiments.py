"""bench/accuracy.py's caption sources: masked experiments really hide the class names (real data)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.bench.test_gpu_smoke import load

accuracy = load("accuracy")
MINITEST = accuracy.SHARED / "aid-minitest"
pytestmark = pytest.mark.skipif(not MINITEST.exists(), reason="../shared/data/aid-minitest absent")


@pytest.mark.parametrize("source", ["llava", "human"])
def test_masked_minitest_captions_name_no_class(source: str, tmp_path: Path) -> None:
    from skyfuse.data.folder import SceneFolder

    folder = SceneFolder(MINITEST)
    raw = accuracy._captions(f"minitest-{source}", folder, tmp_path)
    masked = accuracy._captions(f"minitest-{source}-masked", folder, tmp_path)
    assert set(raw) == set(masked) and len(raw) == 200
    named = re.compile(r"\b(airport|beach|bare ?land|baseball ?field)s?\b", re.I)
    assert sum(bool(named.search(c)) for c in raw.values()) > 50
    assert not any(named.search(c) for c in masked.values())
    assert accuracy.DATASETS[f"minitest-{source}-masked"] == "aid-minitest"
