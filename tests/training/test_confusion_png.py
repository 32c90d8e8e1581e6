"""`plot_confusion` must not clip a long title on a small (few-class) figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from skyfuse.reports.confusion import plot_confusion


def test_long_title_with_few_classes_is_not_clipped(tmp_path: Path) -> None:
    cm = np.diag([10, 10, 10, 10])
    title = "confusion on 40 sampled images of a long dataset name (OA 100.0 %)"
    png = plot_confusion(cm, ["a", "b", "c", "d"], tmp_path / "c.png", title=title)
    pixels = np.asarray(Image.open(png).convert("L"))
    # every border column/row is background: nothing (title included) runs off the edges
    for edge in (pixels[:, 0], pixels[:, -1], pixels[0, :], pixels[-1, :]):
        assert edge.min() > 240
