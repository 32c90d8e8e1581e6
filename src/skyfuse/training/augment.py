"""Aerial-image augmentation on pixel batches: flips and 90-degree rotations.

Why these: overhead scenes have no canonical "up", so the eight symmetries of the square are label-
preserving, cost nothing (index shuffles, no interpolation) and run on the device after the batch is
moved there, inside autocast or not (no dtype assumptions).
"""

from __future__ import annotations

import torch


def aerial_augment(pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply one random element of the dihedral group D4 to each image of a (B, C, H, W) batch.

    Non-square images only get flips (a 90-degree turn would change their shape).
    """
    if pixels.ndim != 4:
        raise ValueError(f"expected (B, C, H, W) pixels, got shape {tuple(pixels.shape)}")
    b = pixels.shape[0]
    draw = torch.randint(0, 8, (b,), generator=generator).tolist()
    square = pixels.shape[-1] == pixels.shape[-2]
    out = []
    for i, k in enumerate(draw):
        x = pixels[i]
        if k & 4:
            x = x.flip(-1)
        turns = k & 3
        if square and turns:
            x = torch.rot90(x, turns, dims=(-2, -1))
        elif not square and turns & 1:
            x = x.flip(-2)
        out.append(x)
    return torch.stack(out)
