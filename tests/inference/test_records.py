"""Prediction files survive a kill mid-write: the torn last record is cut, the image predicted again."""

from __future__ import annotations

from pathlib import Path

import pytest

from skyfuse.errors import BadInputError
from skyfuse.inference import PredictionWriter, read_predictions
from skyfuse.inference.predictor import LabelProb, Prediction


def _pred(caption: str) -> Prediction:
    return Prediction([LabelProb("beach", 0.75), LabelProb("forest", 0.25)], caption)


def _write(out: Path, names: list[str]) -> None:
    with PredictionWriter(out, top_k=2) as w:
        for n in names:
            w.write(
                n, _pred(f'sand, "water"\nand {n}')
            )  # quotes, comma and a newline in the caption


@pytest.mark.parametrize("cut", [1, 5, 12, 40])
def test_torn_csv_row_is_cut_and_redone(tmp_path: Path, cut: int) -> None:
    """Regression: a CSV cut inside the last row counted that image as done, with a broken record."""
    out = tmp_path / "p.csv"
    _write(out, ["a.jpg", "b.jpg", "c.jpg"])
    whole = out.read_bytes()
    out.write_bytes(whole[:-cut])
    w = PredictionWriter(out, top_k=2)
    assert w.done == {"a.jpg", "b.jpg"}
    w.write("c.jpg", _pred("again"))
    w.close()
    recs = read_predictions(out)
    assert [r["path"] for r in recs] == ["a.jpg", "b.jpg", "c.jpg"]
    assert recs[2]["caption"] == "again" and recs[2]["top_k"][1] == {
        "label": "forest",
        "prob": 0.25,
    }
    assert recs[0]["caption"] == 'sand, "water"\nand a.jpg'


def test_intact_csv_resumes_untouched(tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    _write(out, ["a.jpg", "b.jpg"])
    before = out.read_bytes()
    assert PredictionWriter(out, top_k=2).done == {"a.jpg", "b.jpg"}
    assert out.read_bytes() == before


def test_damaged_csv_row_in_the_middle_is_an_error(tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    _write(out, ["a.jpg", "b.jpg"])
    lines = out.read_text(encoding="utf-8").split("\n")
    lines.insert(1, "x.jpg,only two")
    out.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(BadInputError, match="not a complete prediction row"):
        PredictionWriter(out, top_k=2)
