"""Pictures and layout for many classes: the F1 map turns tall, confusion matrices fold per model."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from skyfuse.reports.figures import plot_f1_heatmap, plot_oa_bars
from skyfuse.reports.page import write_report
from skyfuse.reports.runs import RunRecord


def _record(model: str, classes: list[str], hits: int) -> RunRecord:
    k = len(classes)
    confusion = [
        [hits if i == j else (1 if j == (i + 1) % k else 0) for j in range(k)] for i in range(k)
    ]
    oa = hits / (hits + 1)
    return RunRecord(
        path=Path(model), name=model, model=model, seed=0, kind="train", classes=classes,
        dataset="aid", oa=oa, aa=oa, kappa=oa, f1=[oa] * k, confusion=confusion,
    )  # fmt: skip


def test_f1_map_is_tall_for_many_classes_and_bars_draw(tmp_path: Path) -> None:
    classes = [f"class{i}" for i in range(30)]
    tall = plot_f1_heatmap(
        ["dual", "image"], classes, [[50.0] * 30, [80.0] * 30], tmp_path / "a.png"
    )
    wide = plot_f1_heatmap(
        ["dual", "image"], classes[:5], [[50.0] * 5, [80.0] * 5], tmp_path / "b.png"
    )
    with Image.open(tall) as a, Image.open(wide) as b:
        assert a.height > a.width and b.width > b.height
    bars = plot_oa_bars(["dual", "probe-text"], [80.0, 60.0], [2.0, float("nan")], [3, 1],
                        tmp_path / "c.png", muted=[False, True])  # fmt: skip
    assert bars.read_bytes()[:4] == b"\x89PNG"


def test_many_classes_fold_the_confusion_matrices(tmp_path: Path) -> None:
    classes = [f"class{i}" for i in range(25)]
    runs = [_record("dual", classes, 9), _record("image", classes, 4), _record("text", classes, 2)]
    text = write_report(runs, tmp_path).read_text(encoding="utf-8")
    assert text.count('<details class="fold"') == 3  # one per model
    assert text.count('<details class="fold" open>') == 1  # the first
    assert "<h2>Training curves</h2>" not in text  # no run recorded any epochs
