"""Attention and embedding pictures from synthetic attention maps (no model needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skyfuse.inference.predictor import Explanation
from skyfuse.reports.attention import (
    infer_grid,
    merged_word_weights,
    overlay,
    plot_explanation,
    region_heatmap,
    top_words,
    word_groups,
    word_weights,
)
from skyfuse.reports.embedding import plot_tsne


def _explanation() -> Explanation:
    words = ["[CLS]", "a", "river", ",", "##s", "fields", "[SEP]"]
    t2i = np.full((7, 16), 1 / 16)
    t2i[2] = 0.0
    t2i[2, 5] = 1.0  # "river" looks at one region
    t2i[5, :8] = 1 / 8  # "fields" looks at the top half
    t2i[5, 8:] = 0.0
    t2i[3] = 0.0
    t2i[3, 0] = 1.0  # punctuation is focused too, but never picked
    i2t = np.full((16, 7), 1 / 7)
    return Explanation({"level0.t2i": t2i, "level0.i2t": i2t}, 16, 7, words)


def test_grid_and_maps() -> None:
    assert infer_grid(49) == (7, 7, 0)
    assert infer_grid(197) == (14, 14, 1)
    assert infer_grid(10) == (3, 3, 1)  # CLS + 3 x 3
    assert infer_grid(12) is None
    ex = _explanation()
    river = region_heatmap(ex, word=2)
    assert river is not None and river.shape == (4, 4)
    assert river[1, 1] == 1.0 and river.sum() == 1.0
    assert top_words(ex, 2) == [2, 5]
    ww = word_weights(ex)
    assert ww is not None and [w for w, _ in ww] == ex.words
    assert region_heatmap(Explanation({}, 16, 7, [])) is None


def test_pictures(tmp_path: Path) -> None:
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8))
    heat = region_heatmap(_explanation())
    assert heat is not None
    assert overlay(img, heat).size == (80, 64)
    png = plot_explanation(img, _explanation(), tmp_path / "a.png", title="t", caption="a river")
    assert png is not None
    with Image.open(png) as im:
        assert im.size[0] > 600 and np.asarray(im.convert("L")).std() > 10
    assert plot_explanation(img, Explanation({}, 16, 7, []), tmp_path / "none.png") is None
    # (tsne.png itself is checked by the explain CLI test)
    with pytest.raises(ValueError, match="at least 3"):
        plot_tsne(np.zeros((2, 4)), [0, 1], ["x", "y"], tmp_path / "u.png")


def test_whole_words_not_pieces_or_stop_words() -> None:
    """Regression: explain titled a panel 'tar' (of tarmac) and picked 'there'; bars showed '##mac'."""
    words = ["[CLS]", "there", "is", "tar", "##mac", "and", "grass", ".", "[SEP]"]
    assert word_groups(words) == [
        ("there", [1]),
        ("is", [2]),
        ("tarmac", [3, 4]),
        ("and", [5]),
        ("grass", [6]),
        (".", [7]),
    ]
    t2i = np.full((9, 16), 1 / 16)
    t2i[1] = 0.0
    t2i[1, 3] = 1.0  # 'there' is the most focused token, but a stop word
    t2i[3] = 0.0
    t2i[3, 0] = 1.0  # 'tar' piece focused ...
    t2i[4] = 0.0
    t2i[4, 0] = 0.5  # ... and '##mac' too: one word
    t2i[4, 1] = 0.5
    i2t = np.full((16, 9), 1 / 9)
    ex = Explanation({"level0.t2i": t2i, "level0.i2t": i2t}, 16, 9, words)
    assert top_words(ex, 2) == [3, 6]
    both = region_heatmap(ex, word=[3, 4])
    assert both is not None and both[0, 0] == 1.0 and 0.0 < both[0, 1] < 1.0
    merged = merged_word_weights(ex)
    assert merged is not None and [w for w, _ in merged] == [
        "there",
        "is",
        "tarmac",
        "and",
        "grass",
    ]
    assert dict(merged)["tarmac"] == pytest.approx(2 / 9)
