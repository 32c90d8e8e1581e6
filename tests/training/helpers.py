"""Tiny labelled token features for training tests (class signal in a few tokens of each modality)."""

from __future__ import annotations

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
