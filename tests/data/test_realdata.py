"""Real data beside the checkout (skipped when absent): WHU-RS19 and the AID minitest."""

from __future__ import annotations

import re

import pytest

from skyfuse.data import SceneFolder
from skyfuse.data.catalog import get_dataset
from skyfuse.data.check import check_folder
from skyfuse.data.splits import make_split
from tests.conftest import shared_path

pytestmark = pytest.mark.realdata


def _source_counts(text: str) -> dict[str, int]:
    line = next(ln for ln in text.splitlines() if ln.startswith("- Per class:"))
    return {m[0]: int(m[1]) for m in re.findall(r"([a-z]+) (\d+)", line)}


def test_whu_rs19_checks_complete() -> None:
    root = shared_path("whu-rs19")
    expected = _source_counts((root / "SOURCE.md").read_text())
    assert len(expected) == 19 and sum(expected.values()) == 1005
    report = check_folder(root)
    assert report.classes == expected
    assert report.total == 1005 and report.corrupt == []
    assert report.dataset is not None and report.dataset.dataset == "whu-rs19"
    assert report.dataset.complete
    assert report.sizes["most_common"][0] == ("600x600", 1001)
    assert set(report.skipped["metadata"]) >= {"SOURCE.md", "MANIFEST.sha256", "class_changes.txt"}
    assert get_dataset("whu-rs19").expected_counts() == expected
    split = make_split(SceneFolder(root), protocol="whu-60", seed=0)
    assert len(split.test) == 1005 - sum(round(0.6 * n + 1e-9) for n in expected.values())


def test_aid_minitest_is_200_pairs_in_4_classes() -> None:
    root = shared_path("aid-minitest")
    folder = SceneFolder(root)
    assert folder.layout == "paper"
    assert folder.classes == ["Airport", "BareLand", "BaseballField", "Beach"]
    assert len(folder) == 200 and folder.counts() == dict.fromkeys(folder.classes, 50)
    texts = folder.texts()
    assert len(texts) == 200 and all(t for t in texts.values())
