from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from skyfuse.captioning.attributes import caption_pil, measure
from skyfuse.captioning.audit import names_class
from skyfuse.data.catalog import get_dataset, list_datasets
from skyfuse.data.synthetic import make_synthetic_dataset


def _img(rgb: tuple[int, int, int], size: int = 64) -> Image.Image:
    return Image.new("RGB", (size, size), rgb)


def test_measures_follow_the_pixels() -> None:
    green = measure(_img((60, 140, 50)))
    water = measure(_img((20, 50, 110)))
    assert green["vegetation"] > 0.9 and water["water"] > 0.9 and green["water"] < 0.1
    stripes = np.zeros((64, 64, 3), np.uint8)
    stripes[:, ::8] = 255
    m = measure(Image.fromarray(stripes))
    assert m["coherence"] > 0.45 and m["periodicity"] > 0.25
    assert "top to bottom" in caption_pil(Image.fromarray(stripes))


def test_deterministic_and_never_names_a_class(tmp_path: Path) -> None:
    root = make_synthetic_dataset(tmp_path / "syn", per_class=2, size=96)
    all_classes = {c.name for n in list_datasets() for c in get_dataset(n).classes}
    captions = []
    for p in sorted(root.glob("*/*.png")) + sorted(root.glob("*/*.jpg")):
        img = Image.open(p)
        cap = caption_pil(img)
        assert cap == caption_pil(img)
        leaked = [c for c in all_classes if names_class(cap, c)]
        assert not leaked, (cap, leaked)
        captions.append(cap)
    assert len(captions) >= 10 and len(set(captions)) > len(captions) // 2
