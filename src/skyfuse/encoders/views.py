"""Dihedral views of an image encoder: the 8 rotations and flips of an aerial scene, each cached.

Why: an aerial or satellite scene has no "up", so its rotations and mirror images are as real as the
original. With frozen encoders the only way a model can learn that is to see the encoder's features
of the transformed image; encoding each image under the 8 transforms of the square (the dihedral group
D4) multiplies the training set by 8 at the price of 8 encodes, paid once: every view is a separate
encoder id in the feature cache, so reruns, other seeds and other models reuse it. At test time the
predictions over the views are averaged (test-time augmentation).

The transform acts on the preprocessed square crop, so it is exact (no border, no interpolation).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from skyfuse.encoders.base import ImageEncoder, ImagePreprocess, TokenBatch
from skyfuse.errors import ConfigError

#: Names of the 8 dihedral views; index 0 is the image as it is.
DIHEDRAL_VIEWS: tuple[str, ...] = (
    "id",
    "rot90",
    "rot180",
    "rot270",
    "flip",
    "flip-rot90",
    "flip-rot180",
    "flip-rot270",
)


def apply_view(pixels: torch.Tensor, view: int) -> torch.Tensor:
    """Pixels (..., H, W) under dihedral view ``view`` (0-7): a horizontal flip for 4-7, then
    ``view % 4`` quarter turns counter-clockwise."""
    if not 0 <= view < len(DIHEDRAL_VIEWS):
        raise ConfigError(f"view must be 0-{len(DIHEDRAL_VIEWS) - 1}, got {view}")
    x = pixels.flip(-1) if view >= 4 else pixels
    return torch.rot90(x, view % 4, dims=(-2, -1)) if view % 4 else x


class ViewEncoder:
    """An image encoder that sees every image through one dihedral view.

    Its ``encoder_id`` names the view (the original's id for view 0), so the feature cache keeps each
    view apart and reuses it like any other feature.
    """

    def __init__(self, base: ImageEncoder, view: int) -> None:
        apply_view(torch.zeros(1, 1, 1), view)  # validates the index
        self.base = base
        self.view = view
        self.encoder_id = (
            base.encoder_id if view == 0 else f"{base.encoder_id}@{DIHEDRAL_VIEWS[view]}"
        )
        self.dim: int = base.dim
        self.preprocess_cfg: ImagePreprocess = base.preprocess_cfg
        self.frozen: bool = getattr(base, "frozen", True)

    @property
    def weights_loaded(self) -> bool:
        return bool(getattr(self.base, "weights_loaded", True))

    def parameters(self) -> Any:
        params = getattr(self.base, "parameters", None)
        return params() if params is not None else iter(())

    def to(self, device: Any) -> ViewEncoder:
        if hasattr(self.base, "to"):
            self.base.to(device)
        return self

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return apply_view(self.base.preprocess(images), self.view)

    def encode(self, pixels: torch.Tensor) -> TokenBatch:
        return self.base.encode(pixels)


def parse_views(views: int) -> list[int]:
    """The view indices for a count: 1 (no augmentation), 2 (+ flip), 4 (rotations), 8 (all of D4)."""
    choices = {1: [0], 2: [0, 4], 4: [0, 1, 2, 3], 8: list(range(8))}
    if views not in choices:
        raise ConfigError(f"--views must be 1, 2, 4 or 8, got {views}")
    return choices[views]


def extract_views(
    samples: Sequence[Any],
    captions: Mapping[str, str],
    image_encoder: ImageEncoder,
    text_encoder: Any,
    *,
    views: int = 8,
    cache_dir: Path | None,
    batch_size: int = 32,
    device: str = "cpu",
    show_progress: bool = True,
) -> Any:
    """A `FeatureSet` whose ``image_views`` hold the image tokens of each dihedral view.

    View 0 is the ordinary feature set (same cache entries as `extract_features`); the others are
    extracted through `ViewEncoder`. Images that fail in any view are dropped from all of them.
    """
    from skyfuse.encoders.features import extract_features

    order = parse_views(views)

    def one(v: int) -> Any:
        return extract_features(
            samples,
            captions,
            ViewEncoder(image_encoder, v) if v else image_encoder,
            text_encoder,
            cache_dir=cache_dir,
            batch_size=batch_size,
            device=device,
            show_progress=show_progress,
        )

    first = one(order[0])
    check_view_memory(first.image_tokens, len(order))
    sets = [first, *(one(v) for v in order[1:])]
    base = first
    common = set(base.rels).intersection(*(s.rels for s in sets[1:]))
    if len(common) < len(base.rels):
        base = base.subset([r for r in base.rels if r in common])
    aligned = [s if s.rels == base.rels else s.subset(base.rels) for s in sets]
    base.image_views = ViewTokens(
        tokens=[s.image_tokens for s in aligned],
        pooled=[s.image_pooled for s in aligned],
        names=[DIHEDRAL_VIEWS[v] for v in order],
    )
    return base


def check_view_memory(tokens: torch.Tensor, views: int, share: float = 0.6) -> None:
    """Refuse before extracting views that would not fit in memory (they live in RAM in training).

    Training holds the views of the whole set twice (the feature set and the split's tensors), so
    the estimate is 2 x views x the size of one view's tokens, against ``share`` of physical memory.
    """
    need = 2 * views * tokens.numel() * tokens.element_size()
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if total > 0 and need > share * total:
        gib = 1024**3
        raise ConfigError(
            f"--views {views} needs about {need / gib:.1f} GiB for {tokens.shape[0]} images' tokens"
            f" ({share * total / gib:.1f} GiB usable here); pass --views 2 or --views 1, or use a"
            " machine with more memory"
        )


class ViewTokens:
    """Image tokens of several views, row-aligned with a FeatureSet (view 0 = the original).

    Every view of an image has the same token count (the same square crop), so the FeatureSet's
    ``image_mask`` serves them all."""

    def __init__(
        self,
        tokens: list[torch.Tensor],
        pooled: list[torch.Tensor],
        names: list[str],
    ) -> None:
        self.tokens = tokens
        self.pooled = pooled
        self.names = names

    def __len__(self) -> int:
        return len(self.tokens)

    def subset(self, idx: torch.Tensor, width: int) -> ViewTokens:
        return ViewTokens(
            [t[idx, :width] for t in self.tokens],
            [p[idx] for p in self.pooled],
            list(self.names),
        )


__all__ = [
    "DIHEDRAL_VIEWS",
    "ViewEncoder",
    "ViewTokens",
    "apply_view",
    "check_view_memory",
    "extract_views",
    "parse_views",
]
