"""Tiny labelled token features for training tests (class signal in a few tokens of each modality)."""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.nn import functional as F

from skyfuse.training.data import TensorSet


def toy_set(
    n: int, seed: int, *, classes: int = 3, di: int = 16, dt: int = 8, ni: int = 6, nt: int = 7
) -> TensorSet:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    hot = F.one_hot(y, classes).float()
    image = torch.randn(n, ni, di, generator=g) * 0.5
    image[:, :2, :classes] += hot[:, None, :] * 2.0
    text = torch.randn(n, nt, dt, generator=g) * 0.5
    text[:, :2, :classes] += hot[:, None, :] * 2.0
    lengths = torch.randint(3, nt + 1, (n, 1), generator=g)
    text_mask = torch.arange(nt)[None, :] < lengths
    return TensorSet(
        image.half(),
        torch.ones(n, ni, dtype=torch.bool),
        text.half(),
        text_mask,
        y,
        [f"c{int(c)}/{i}.png" for i, c in enumerate(y)],
    )


def captioned_scenes(
    root: Path,
    classes: Sequence[str],
    caption_of: Callable[[str], str],
    *,
    per_class: int,
    captions_name: str = "caps.csv",
) -> tuple[Path, Path]:
    """A synthetic scene folder (32 px) under ``root/data`` and a path,caption CSV beside it whose
    caption for each image is ``caption_of(class name)``; returns (folder, csv)."""
    from skyfuse.data.synthetic import make_synthetic_dataset

    data = make_synthetic_dataset(root / "data", per_class=per_class, size=32, classes=classes)
    caps = root / captions_name
    with caps.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "caption"])
        for cls in classes:
            for p in sorted((data / cls).iterdir()):
                w.writerow([f"{cls}/{p.name}", caption_of(cls)])
    return data, caps
