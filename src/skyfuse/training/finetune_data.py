"""Fine-tuning inputs: the split's images as a uint8 pixel cache, captions tokenised once.

Why: decoding and resizing JPEGs in DataLoader workers for every epoch starves a GPU; the pixel cache
(`skyfuse.data.pixelcache`) turns an epoch of loading into memory-mapped copies, and flips, rotations
and normalisation run on the device (`GpuAugment`). The old decode-per-epoch path stays available
(``pixel_cache=False`` in `run_finetune`) for when the cache's disk space (size * size * 3 bytes per
image) is not available.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from skyfuse.data.pixelcache import (
    PixelCache,
    PixelCacheDataset,
    build_pixel_cache,
    make_loader,
    wait_for_pixel_cache,
)
from skyfuse.encoders.base import ImagePreprocess
from skyfuse.training.config import TrainConfig


def pixel_cache_dir(root: Path, preprocess: ImagePreprocess, cache_dir: Path | None = None) -> Path:
    """Where a dataset's pixel cache lives: ``<feature cache>/pixels/<folder name>-<key>``.

    The key covers the resolved dataset folder, the input size and the resize mode (mean/std are applied
    on the device, so encoders that resize alike share one cache).
    """
    from skyfuse.encoders.cache import default_cache_dir

    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    ident = f"{Path(root).resolve()}|{preprocess.size}|{preprocess.resize_mode}"
    key = hashlib.sha256(ident.encode()).hexdigest()[:16]
    return base / "pixels" / f"{Path(root).name or 'data'}-{key}"


def tokenize_all(
    text_encoder: Any, cache: PixelCache, captions: Mapping[str, str]
) -> dict[str, torch.Tensor]:
    """Every cached image's caption tokenised once, rows in cache order (padding trimmed per batch
    by `CaptionPixelDataset`)."""
    tokens = text_encoder.tokenize([captions[rel] for rel in cache.rels])
    return {k: v.cpu() for k, v in tokens.items()}


def trim_padding(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Cut token columns past the batch's longest caption (whole-dataset padding costs compute)."""
    mask = batch.get("attention_mask")
    if mask is None or mask.ndim != 2 or mask.shape[1] == 0:
        return batch
    width = max(int(mask.sum(1).max()), 1)
    if width == mask.shape[1]:
        return batch
    out = dict(batch)
    for key, value in batch.items():
        if (
            key in ("input_ids", "attention_mask", "token_type_ids", "position_ids")
            and value.ndim == 2
        ):
            out[key] = value[:, :width]
    return out


class CaptionPixelDataset(PixelCacheDataset):
    """`PixelCacheDataset` whose batches carry token columns only up to their longest caption; the
    trim happens on the host (in the loader's workers), so the device never waits on a mask sum."""

    def __getitems__(self, items: Sequence[int]) -> dict[str, torch.Tensor]:
        return trim_padding(super().__getitems__(items))


def build_cached_inputs(
    folder: Any,
    split: Any,
    captions: Mapping[str, str],
    classes: Sequence[str],
    image_preprocess: ImagePreprocess,
    text_encoder: Any,
    cache_dir: Path | None = None,
    show_progress: bool = False,
    wait_s: float = 4 * 3600.0,
) -> tuple[PixelCache, dict[str, torch.Tensor]]:
    """Build (or reuse, when current) the pixel cache of all split images and their caption tokens.

    Under DDP only global rank 0 builds; the other ranks wait (up to `wait_s`) for its cache, since
    two builders of one folder would delete each other's shards (launchers such as torchrun start all
    ranks at once)."""
    from skyfuse.training.distributed import is_rank_zero

    index = folder.by_rel()
    rels = list(dict.fromkeys([*split.train, *split.val, *split.test]))
    samples = [index[r] for r in rels]
    where = pixel_cache_dir(folder.root, image_preprocess, cache_dir)
    if is_rank_zero():
        cache = build_pixel_cache(
            samples,
            where,
            preprocess=image_preprocess,
            class_names=classes,
            show_progress=show_progress,
        )
    else:
        cache = wait_for_pixel_cache(samples, where, preprocess=image_preprocess, timeout_s=wait_s)
    return cache, tokenize_all(text_encoder, cache, captions)


def cached_loader(
    cache: PixelCache,
    tokens: Mapping[str, torch.Tensor],
    rels: Sequence[str],
    cfg: TrainConfig,
    *,
    shuffle: bool,
) -> DataLoader[Any]:
    """`make_loader` over a split part: pinned memory under CUDA, persistent workers when workers > 0."""
    ds: Dataset[Any] = CaptionPixelDataset.from_rels(cache, rels, tokens)
    return make_loader(
        ds, batch_size=cfg.batch_size, shuffle=shuffle, workers=cfg.num_workers, seed=cfg.seed
    )
