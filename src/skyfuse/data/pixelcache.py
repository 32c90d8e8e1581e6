"""The fast input pipeline for end-to-end training: pre-resized uint8 pixel shards, GPU-side augmentation.

Why: decoding a 600 px JPEG and resizing it costs milliseconds of one CPU core per image, while one
GPU fine-tuning ViT-B/16 + CLIP text consumes a couple of thousand images per second. Decoding once
into uint8 shards at the encoder's input size turns the loader into a memory copy (4x fewer bytes to
the GPU than float32), and the augmentation (the 8 flips and 90-degree rotations of an aerial tile)
and normalisation run on the GPU, over the whole batch, in a few element-wise kernels.

Layout of a cache folder (no pickle anywhere):
- ``index.json``: version, the encoder preprocessing it was made for (size, resize mode, mean, std),
  class names, per-image rel path / label / source
  fingerprint (byte size, mtime), the shard list, and the images that could not be decoded (with the
  reason; they are reported, not silently dropped);
- ``pixels-00000.safetensors`` ...: one uint8 tensor ``pixels`` of shape (n, size, size, 3) each.

Shards are memory-mapped, so DataLoader workers share the page cache instead of copying the data.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from skyfuse.data.folder import Sample
from skyfuse.data.images import decode_image
from skyfuse.data.preprocess import ImagePreprocess
from skyfuse.errors import BadInputError, CheckpointError, ImageDecodeError
from skyfuse.progress import ProgressReporter, resolve_progress

CACHE_VERSION = 1
INDEX_NAME = "index.json"
RESAMPLE = "bilinear-antialias"  # what skyfuse.data.transforms.resize does

Batch = dict[str, Tensor]


# -- decoding and resizing ---------------------------------------------------------------------------
def resize_uint8(image: Image.Image, size: int, resize_mode: str = "exact") -> np.ndarray:
    """Resize like the encoder's own preprocessing (`skyfuse.data.transforms`), kept as uint8 (H, W, 3).

    Normalising the result gives the encoder's input up to uint8 rounding (at most 0.5 / 255).
    """
    from skyfuse.data.transforms import center_crop, pil_to_tensor, resize, resize_shorter

    x = pil_to_tensor(image)
    if resize_mode == "exact":
        x = resize(x, (size, size))
    elif resize_mode == "shorter":
        x = center_crop(resize_shorter(x, size), size)
    else:
        raise BadInputError(f"resize_mode must be 'exact' or 'shorter', got {resize_mode!r}")
    x = x.round().clamp_(0, 255).to(torch.uint8)
    return x.permute(1, 2, 0).contiguous().numpy()


def _stat_key(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _decode_job(job: tuple[str, int, str]) -> tuple[np.ndarray | None, str | None]:
    """Decode + resize one file; returns (pixels, None) or (None, reason). Module level for pools."""
    path, size, mode = job
    try:
        data = Path(path).read_bytes()
        return resize_uint8(decode_image(data, path), size, mode), None
    except ImageDecodeError as exc:
        return None, exc.reason
    except OSError as exc:
        return None, f"cannot read ({exc.strerror or exc})"


# -- safetensors, memory-mapped ----------------------------------------------------------------------
def _map_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Memory-map the uint8 tensors of a safetensors file (format: u64 header length, JSON header)."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise CheckpointError(
                f"{path}: truncated pixel shard; delete the cache folder and rebuild it"
            )
        (n,) = struct.unpack("<Q", raw)
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CheckpointError(
                f"{path}: corrupt shard header; delete the cache folder and rebuild it"
            ) from None
    out: dict[str, np.ndarray] = {}
    for key, meta in header.items():
        if key == "__metadata__":
            continue
        if meta.get("dtype") != "U8":
            raise CheckpointError(
                f"{path}: tensor {key!r} is {meta.get('dtype')}, expected U8; rebuild the cache"
            )
        start, end = meta["data_offsets"]
        shape = tuple(meta["shape"])
        if end - start != int(np.prod(shape)):
            raise CheckpointError(
                f"{path}: tensor {key!r} has the wrong byte count; rebuild the cache"
            )
        out[key] = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n + start, shape=shape)
    return out


def _save_shard(path: Path, pixels: np.ndarray) -> None:
    from safetensors.numpy import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file({"pixels": np.ascontiguousarray(pixels)}, str(tmp))
    os.replace(tmp, path)


# -- the cache ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SkippedImage:
    rel: str
    reason: str


class PixelCache:
    """A folder of pre-resized uint8 images, memory-mapped; index i is the i-th cached image.

    Open one with `PixelCache.open(folder)`, or build/reuse one with `build_pixel_cache`.
    """

    def __init__(self, root: Path, index: dict[str, Any]) -> None:
        self.root = Path(root)
        pre = index["preprocess"]
        self.preprocess = ImagePreprocess(
            int(pre["size"]), tuple(pre["mean"]), tuple(pre["std"]), str(pre["resize_mode"])
        )
        self.size: int = self.preprocess.size
        self.class_names: list[str] = list(index["class_names"])
        self.rels: list[str] = [item["rel"] for item in index["images"]]
        self.labels = np.asarray([item["label"] for item in index["images"]], dtype=np.int64)
        self.skipped = [SkippedImage(s["rel"], s["reason"]) for s in index.get("skipped", [])]
        self._index = index
        self._shard_files = [self.root / s["file"] for s in index["shards"]]
        counts = [int(s["count"]) for s in index["shards"]]
        self._starts = np.cumsum([0, *counts])
        if int(self._starts[-1]) != len(self.rels):
            raise CheckpointError(
                f"{self.root / INDEX_NAME}: shards hold {int(self._starts[-1])} images but the index lists"
                f" {len(self.rels)}; delete the folder and rebuild the cache"
            )
        self._maps: list[np.ndarray] | None = None

    @classmethod
    def open(cls, root: str | Path) -> PixelCache:
        """Open an existing cache; a missing or foreign folder raises a one-line error with the fix."""
        root = Path(root)
        path = root / INDEX_NAME
        if not path.is_file():
            raise BadInputError(
                f"{path}: no pixel cache here; build one with skyfuse.data.pixelcache.build_pixel_cache"
            )
        try:
            index = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CheckpointError(
                f"{path}: corrupt cache index; delete the folder and rebuild the cache"
            ) from None
        if index.get("version") != CACHE_VERSION or index.get("format") != "skyfuse-pixelcache":
            raise CheckpointError(
                f"{path}: not a skyfuse pixel cache of version {CACHE_VERSION}; delete the folder and rebuild it"
            )
        for shard in index["shards"]:
            if not (root / shard["file"]).is_file():
                raise CheckpointError(
                    f"{root / shard['file']}: shard missing; delete the folder and rebuild the cache"
                )
        return cls(root, index)

    # memory maps are opened lazily in each process and never pickled to DataLoader workers
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_maps"] = None
        return state

    def _shards(self) -> list[np.ndarray]:
        if self._maps is None:
            maps = []
            for f in self._shard_files:
                arr = _map_safetensors(f)["pixels"]
                if arr.ndim != 4 or arr.shape[1:] != (self.size, self.size, 3):
                    raise CheckpointError(
                        f"{f}: shard shape {arr.shape} does not match size {self.size}; rebuild the cache"
                    )
                maps.append(arr)
            self._maps = maps
        return self._maps

    def __len__(self) -> int:
        return len(self.rels)

    def pixels(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Gather images as one (n, size, size, 3) uint8 array (shard by shard, in the order given)."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"pixel cache index out of range 0..{len(self) - 1}")
        out = np.empty((idx.size, self.size, self.size, 3), dtype=np.uint8)
        shard_of = np.searchsorted(self._starts, idx, side="right") - 1
        shards = self._shards()
        for s in np.unique(shard_of):
            pos = np.nonzero(shard_of == s)[0]
            local = idx[pos] - self._starts[s]
            order = np.argsort(local, kind="stable")  # ascending reads are kinder to the page cache
            out[pos[order]] = shards[int(s)][local[order]]
        return out

    def is_current(self, samples: Sequence[Sample], preprocess: ImagePreprocess) -> bool:
        """True when this cache holds exactly these files, unchanged since they were cached, resized
        the same way (mean/std may differ: normalisation happens on the device)."""
        if (preprocess.size, preprocess.resize_mode) != (self.size, self.preprocess.resize_mode):
            return False
        known = {item["rel"]: item for item in self._index["images"]}
        known.update({s["rel"]: s for s in self._index.get("skipped", [])})
        if len(known) != len(samples):
            return False
        for sample in samples:
            item = known.get(sample.rel)
            if item is None or "stat" not in item:
                return False
            try:
                if tuple(item["stat"]) != _stat_key(sample.path):
                    return False
            except OSError:
                return False
        return True

    def __repr__(self) -> str:
        return f"PixelCache({str(self.root)!r}, images={len(self)}, size={self.size}, skipped={len(self.skipped)})"


def build_pixel_cache(
    samples: Sequence[Sample],
    out_dir: str | Path,
    *,
    preprocess: ImagePreprocess,
    class_names: Sequence[str] | None = None,
    shard_size: int = 1024,
    workers: int = 0,
    reuse: bool = True,
    show_progress: bool | ProgressReporter = False,
) -> PixelCache:
    """Decode, resize as `preprocess` says (the image encoder's `preprocess_cfg`) and store `samples`
    as uint8 shards in `out_dir`.

    An up-to-date cache of the same files and resizing is reused. Images that cannot be decoded are left
    out and listed in ``cache.skipped`` with the reason. `workers` > 0 decodes in that many processes.
    `show_progress`: a `skyfuse.progress.ProgressReporter`, True for the process default, False for none.
    """
    size = preprocess.size
    if size <= 0:
        raise BadInputError(f"pixel cache size must be positive, got {size}")
    if preprocess.resize_mode not in ("exact", "shorter"):
        raise BadInputError(
            f"resize_mode must be 'exact' or 'shorter', got {preprocess.resize_mode!r}"
        )
    if shard_size <= 0:
        raise BadInputError(f"shard_size must be positive, got {shard_size}")
    if not samples:
        raise BadInputError(f"{out_dir}: no images to cache; check the dataset folder")
    out = Path(out_dir)
    if reuse and (out / INDEX_NAME).is_file():
        try:
            cache = PixelCache.open(out)
            if cache.is_current(samples, preprocess):
                return cache
        except (CheckpointError, BadInputError, KeyError, TypeError):
            pass
    out.mkdir(parents=True, exist_ok=True)
    (out / INDEX_NAME).unlink(missing_ok=True)  # an interrupted rebuild must not look valid
    for old in out.glob("pixels-*.safetensors"):
        old.unlink()
    names = (
        list(class_names) if class_names is not None else sorted({s.class_name for s in samples})
    )
    label_of = {n: i for i, n in enumerate(names)}
    missing = sorted({s.class_name for s in samples} - set(label_of))
    if missing:
        raise BadInputError(
            f"{out}: samples of classes {', '.join(missing)} are not in class_names"
        )

    images: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    shards: list[dict[str, Any]] = []
    buffer: list[np.ndarray] = []

    def flush() -> None:
        if not buffer:
            return
        name = f"pixels-{len(shards):05d}.safetensors"
        _save_shard(out / name, np.stack(buffer))
        shards.append({"file": name, "count": len(buffer)})
        buffer.clear()

    jobs = [(str(s.path), size, preprocess.resize_mode) for s in samples]
    for sample, (pixels, reason) in zip(
        samples, _run_jobs(jobs, workers, show_progress), strict=True
    ):
        try:
            stat = list(_stat_key(sample.path))
        except OSError:
            stat = None
        if pixels is None:
            skipped.append({"rel": sample.rel, "reason": reason, "stat": stat})
            continue
        images.append({"rel": sample.rel, "label": label_of[sample.class_name], "stat": stat})
        buffer.append(pixels)
        if len(buffer) >= shard_size:
            flush()
    flush()
    if not images:
        raise BadInputError(
            f"{out}: none of the {len(samples)} images could be decoded; check the dataset"
        )
    index = {
        "format": "skyfuse-pixelcache",
        "version": CACHE_VERSION,
        "preprocess": {
            "size": size,
            "resize_mode": preprocess.resize_mode,
            "mean": list(preprocess.mean),
            "std": list(preprocess.std),
            "resample": RESAMPLE,
        },
        "layout": "NHWC uint8 RGB",
        "class_names": names,
        "images": images,
        "skipped": skipped,
        "shards": shards,
    }
    tmp = out / (INDEX_NAME + ".tmp")
    tmp.write_text(json.dumps(index), encoding="utf-8")
    os.replace(tmp, out / INDEX_NAME)
    return PixelCache(out, index)


def wait_for_pixel_cache(
    samples: Sequence[Sample],
    out_dir: str | Path,
    *,
    preprocess: ImagePreprocess,
    timeout_s: float = 4 * 3600.0,
    poll_s: float = 1.0,
) -> PixelCache:
    """The cache another process is building in `out_dir`, once it is complete and current.

    Why: under DDP only rank 0 may build a cache folder (two builders delete each other's shards);
    the other ranks wait here. Raises `BadInputError` after `timeout_s`.
    """
    import time

    out = Path(out_dir)
    deadline = time.monotonic() + timeout_s
    while True:
        if (out / INDEX_NAME).is_file():
            try:
                cache = PixelCache.open(out)
                if cache.is_current(samples, preprocess):
                    return cache
            except (CheckpointError, BadInputError, KeyError, TypeError, ValueError):
                pass
        if time.monotonic() >= deadline:
            raise BadInputError(
                f"{out}: no complete pixel cache after {timeout_s:g} s of waiting for rank 0 to"
                " build it; check rank 0's log, or build it first with a single-process run"
            )
        time.sleep(poll_s)


def _run_jobs(
    jobs: list[tuple[str, int, str]], workers: int, show_progress: bool | ProgressReporter
) -> Iterator[tuple[np.ndarray | None, str | None]]:
    with resolve_progress(show_progress) as bar:
        task = bar.add_task("caching pixels", total=len(jobs))
        if workers > 0:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for result in pool.map(_decode_job, jobs, chunksize=16):
                    bar.advance(task, 1)
                    yield result
        else:
            for job in jobs:
                result = _decode_job(job)
                bar.advance(task, 1)
                yield result


# -- datasets and the loader -------------------------------------------------------------------------
class PixelCacheDataset(Dataset[Batch]):
    """Items of a `PixelCache` (optionally a subset), with optional pre-tokenised text per image.

    `tokens` maps names (``input_ids``, ``attention_mask``) to tensors whose first axis follows the
    cache's order. `__getitems__` gathers a whole batch in one call (the DataLoader uses it), so the
    per-image Python overhead disappears.
    """

    def __init__(
        self,
        cache: PixelCache,
        indices: Sequence[int] | None = None,
        tokens: Mapping[str, Tensor] | None = None,
    ) -> None:
        self.cache = cache
        self.indices = (
            np.arange(len(cache)) if indices is None else np.asarray(indices, dtype=np.int64)
        )
        self.tokens = dict(tokens or {})
        for name, t in self.tokens.items():
            if t.shape[0] != len(cache):
                raise BadInputError(
                    f"tokens[{name!r}] has {t.shape[0]} rows but the cache holds {len(cache)} images"
                )

    @classmethod
    def from_rels(
        cls, cache: PixelCache, rels: Sequence[str], tokens: Mapping[str, Tensor] | None = None
    ) -> PixelCacheDataset:
        """A subset by relative path (e.g. a split's train part); unknown paths raise with the reason."""
        pos = {r: i for i, r in enumerate(cache.rels)}
        skipped = {s.rel: s.reason for s in cache.skipped}
        idx = []
        for rel in rels:
            if rel in pos:
                idx.append(pos[rel])
            elif rel in skipped:
                continue  # reported at build time; a corrupt file cannot be trained on
            else:
                raise BadInputError(
                    f"{cache.root}: {rel} is not in the pixel cache; rebuild it for this dataset"
                )
        return cls(cache, idx, tokens)

    def __len__(self) -> int:
        return int(self.indices.size)

    def __getitem__(self, i: int) -> Batch:
        batch = self.__getitems__([i])
        return {k: v[0] for k, v in batch.items()}

    def __getitems__(self, items: Sequence[int]) -> Batch:
        idx = self.indices[np.asarray(items, dtype=np.int64)]
        out: Batch = {
            "pixels": torch.from_numpy(self.cache.pixels(idx)),
            "labels": torch.from_numpy(self.cache.labels[idx]),
            "index": torch.from_numpy(idx),
        }
        t_idx = torch.from_numpy(idx)
        for name, t in self.tokens.items():
            out[name] = t[t_idx]
        return out


class DecodedImageDataset(Dataset[Batch]):
    """Images decoded from their files on every access (the slow path the cache replaces)."""

    def __init__(self, samples: Sequence[Sample], preprocess: ImagePreprocess) -> None:
        self.samples = list(samples)
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Batch:
        s = self.samples[i]
        pixels, reason = _decode_job(
            (str(s.path), self.preprocess.size, self.preprocess.resize_mode)
        )
        if pixels is None:
            raise ImageDecodeError(s.path, reason or "cannot decode")
        return {
            "pixels": torch.from_numpy(pixels),
            "labels": torch.tensor(s.label, dtype=torch.int64),
            "index": torch.tensor(i, dtype=torch.int64),
        }


def collate_batch(items: Batch | Sequence[Batch]) -> Batch:
    """Collate per-item dicts by stacking; batches already gathered by `__getitems__` pass through."""
    if isinstance(items, dict):
        return items
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def make_loader(
    dataset: Dataset[Batch],
    *,
    batch_size: int,
    shuffle: bool = False,
    workers: int = 0,
    pin_memory: bool | None = None,
    drop_last: bool = False,
    prefetch_factor: int = 4,
    seed: int = 0,
) -> DataLoader[Batch]:
    """A DataLoader tuned for feeding a GPU: pinned memory (when CUDA is present), persistent workers
    that keep their memory maps open between epochs, deep prefetching, seeded shuffling."""
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    gen = torch.Generator()
    gen.manual_seed(seed)
    kwargs: dict[str, Any] = {}
    if workers > 0:
        kwargs.update(persistent_workers=True, prefetch_factor=prefetch_factor)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        pin_memory=pin_memory,
        drop_last=drop_last,
        collate_fn=collate_batch,
        generator=gen,
        **kwargs,
    )


# -- augmentation and normalisation on the device ----------------------------------------------------
class GpuAugment(nn.Module):
    """uint8 (B, H, W, 3) -> normalised float (B, 3, H, W), with random dihedral augmentation.

    Runs wherever the batch is (GPU in training, CPU in tests). Training applies, per sample, one of
    the 8 symmetries of the square (identity, 3 rotations by 90 degrees, 4 flips) as an optional
    transpose, horizontal flip and vertical flip, each chosen with probability 1/2; aerial scenes have
    no "up", so these are label-preserving. Non-square inputs get flips only. The result is
    channels-last in memory (free: it is the uint8 layout) unless `channels_last` is False.
    """

    scale: Tensor
    shift: Tensor

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        dihedral: bool = True,
        channels_last: bool = True,
        out_dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise BadInputError(
                f"GpuAugment needs 3 means and 3 positive stds, got mean={mean} std={std}"
            )
        m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        # (x / 255 - mean) / std == x * scale + shift: one fused multiply-add per element
        self.register_buffer("scale", 1.0 / (255.0 * s), persistent=False)
        self.register_buffer("shift", -m / s, persistent=False)
        self.dihedral = dihedral
        self.channels_last = channels_last
        self.out_dtype = out_dtype

    def forward(self, pixels: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if pixels.ndim != 4 or pixels.shape[-1] != 3:
            raise BadInputError(
                f"GpuAugment expects uint8 (B, H, W, 3) pixels, got shape {tuple(pixels.shape)}"
            )
        x = pixels.permute(0, 3, 1, 2)  # NCHW view over NHWC memory: channels-last for free
        if self.training and self.dihedral:
            x = self._dihedral(x, generator)
        x = torch.addcmul(self.shift, x.to(torch.float32), self.scale)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.to(dtype=self.out_dtype, memory_format=fmt)

    @staticmethod
    def _dihedral(x: Tensor, generator: torch.Generator | None) -> Tensor:
        b, _, h, w = x.shape
        device = generator.device if generator is not None else x.device
        flips = (torch.rand((3, b), generator=generator, device=device) < 0.5).to(x.device)

        def pick(mask: Tensor, changed: Tensor, same: Tensor) -> Tensor:
            return torch.where(mask.view(b, 1, 1, 1), changed, same)

        if h == w:
            x = pick(flips[0], x.transpose(-1, -2), x)
        x = pick(flips[1], x.flip(-1), x)
        return pick(flips[2], x.flip(-2), x)


def gpu_augment_for(preprocess: ImagePreprocess, **kwargs: Any) -> GpuAugment:
    """`GpuAugment` with the mean/std that travel with an image encoder (`ImagePreprocess`)."""
    return GpuAugment(preprocess.mean, preprocess.std, **kwargs)


__all__ = [
    "CACHE_VERSION",
    "DecodedImageDataset",
    "GpuAugment",
    "PixelCache",
    "PixelCacheDataset",
    "SkippedImage",
    "build_pixel_cache",
    "collate_batch",
    "gpu_augment_for",
    "make_loader",
    "resize_uint8",
]
