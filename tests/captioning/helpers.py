"""Tiny scene folders for captioning tests (a few small images, made on the fly)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def make_folder(
    root: Path, per_class: int = 3, classes: tuple[str, ...] = ("Alpha", "Beta"), size: int = 48
) -> Path:
    rng = np.random.default_rng(0)
    for ci, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            arr[:, :, ci % 3] = 200
            Image.fromarray(arr).save(root / name / f"{name.lower()}_{i}.png")
    return root
