"""Input-pipeline speed on the CPU: JPEG files vs pre-resized uint8 shards (skyfuse.data.pixelcache).

What one training step needs from the loader: decode, resize to the encoder's size, augment (the 8
flips/rotations of an aerial tile), collate. Two paths are timed with several DataLoader workers:

- ``jpeg``: decode every file on every epoch (`DecodedImageDataset`), what a plain loader does;
- ``cache``: read pre-resized uint8 images from memory-mapped safetensors shards
  (`PixelCacheDataset`, one gather per batch), built once by `build_pixel_cache` (its one-off cost is
  reported too).

Augmentation and normalisation (`GpuAugment`) run on the GPU in training; here they are timed on the
CPU separately, so the table shows what they would cost a CPU loader. The first batches (worker
start-up) are not timed. Run (the shared machine is noisy: repeat and keep the median):

    .venv/bin/python bench/loader.py --data ../shared/data/whu-rs19 --limit 384 --workers 0,2 \
        --batch 64 --json loader.json [--gpu-json gpu.json]

``--gpu-json`` (the output of bench/gpu.py) puts the GPU's measured consumption beside the loader.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:  # run from a checkout without installing (GPU machines)
    sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402

from skyfuse.data.folder import Sample, SceneFolder  # noqa: E402
from skyfuse.data.pixelcache import (  # noqa: E402
    DecodedImageDataset,
    GpuAugment,
    PixelCacheDataset,
    build_pixel_cache,
    make_loader,
)
from skyfuse.encoders.base import ImagePreprocess  # noqa: E402


def loader_rate(
    dataset: torch.utils.data.Dataset[Any],
    *,
    batch: int,
    workers: int,
    batches: int,
    warmup: int = 2,
    seed: int = 0,
) -> dict[str, float]:
    """Images/s of a DataLoader over `dataset` in steady state (start-up batches excluded)."""
    size = len(dataset)  # type: ignore[arg-type]
    if size < batch:
        raise ValueError(f"{size} images cannot fill one batch of {batch}; use a smaller --batch")
    loader = make_loader(
        dataset, batch_size=batch, shuffle=True, workers=workers, drop_last=True, seed=seed
    )
    n_images = 0
    seen = 0
    start = time.perf_counter()
    it = iter(loader)
    while seen < warmup + batches:
        try:
            b = next(it)
        except StopIteration:  # next epoch (persistent workers stay up)
            it = iter(loader)
            continue
        seen += 1
        if seen == warmup:
            start = time.perf_counter()
        elif seen > warmup:
            n_images += int(b["pixels"].shape[0])
    elapsed = time.perf_counter() - start
    del it, loader
    return {"images_per_s": n_images / elapsed, "images": n_images, "seconds": elapsed}


def augment_rate(size: int, batch: int, repeats: int = 5) -> dict[str, float]:
    """Images/s of `GpuAugment` (dihedral + normalise) on the CPU, one thread per torch setting."""
    aug = GpuAugment((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)).train()
    x = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8)
    aug(x)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        aug(x)
        times.append(time.perf_counter() - t)
    return {"images_per_s": batch / statistics.median(times)}


def run(
    samples: Sequence[Sample],
    *,
    preprocess: ImagePreprocess,
    workers: Sequence[int],
    batch: int,
    batches: int,
    cache_dir: Path,
    build_workers: int,
) -> dict[str, Any]:
    """Time both paths for each worker count; returns the numbers (no printing)."""
    batch = min(batch, len(samples))
    t = time.perf_counter()
    cache = build_pixel_cache(
        samples, cache_dir, preprocess=preprocess, workers=build_workers, reuse=False
    )
    build_s = time.perf_counter() - t
    rows = []
    jpeg_ds = DecodedImageDataset(samples, preprocess)
    cache_ds = PixelCacheDataset(cache)
    for w in workers:
        for name, ds in (("jpeg", jpeg_ds), ("cache", cache_ds)):
            r = loader_rate(ds, batch=batch, workers=w, batches=batches)
            rows.append({"path": name, "workers": w, **r})
    return {
        "images": len(samples),
        "cached": len(cache),
        "skipped": [s.rel for s in cache.skipped],
        "size": preprocess.size,
        "batch": batch,
        "cache_build": {
            "seconds": build_s,
            "images_per_s": len(samples) / build_s,
            "workers": build_workers,
            "bytes": sum(p.stat().st_size for p in cache_dir.glob("pixels-*.safetensors")),
        },
        "loader": rows,
        "augment_cpu": augment_rate(preprocess.size, batch),
    }


def gpu_consumption(path: Path | None) -> dict[str, Any] | None:
    """The best measured training rate in a bench/gpu.py JSON, if given."""
    if path is None:
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    best = max(
        (v for v in data.get("variants", []) if v.get("train")),
        key=lambda v: v["train"]["images_per_s"],
        default=None,
    )
    if best is None:
        return None
    return {
        "variant": best["name"],
        "train_images_per_s": best["train"]["images_per_s"],
        "device": data.get("meta", {}).get("device"),
        "smoke": data.get("meta", {}).get("smoke"),
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        f"loader, {result['images']} images -> {result['size']} px, batch {result['batch']}:",
        "| path | workers | images/s |",
        "|---|---|---|",
    ]
    for r in result["loader"]:
        lines.append(f"| {r['path']} | {r['workers']} | {r['images_per_s']:,.0f} |")
    cb = result["cache_build"]
    lines.append(
        f"cache build (once): {cb['images_per_s']:,.1f} images/s with {cb['workers']} worker process(es),"
        f" {cb['bytes'] / 2**20:,.1f} MiB"
    )
    lines.append(
        f"augment + normalise on the CPU: {result['augment_cpu']['images_per_s']:,.0f} images/s"
    )
    gpu = result.get("gpu")
    if gpu:
        tag = " (smoke run, not a GPU figure)" if gpu.get("smoke") else ""
        lines.append(
            f"GPU consumption ({gpu['variant']} on {gpu['device']}): {gpu['train_images_per_s']:,.0f}"
            f" images/s{tag}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--data", type=Path, required=True, help="a scene folder of JPEG/PNG/TIFF images"
    )
    p.add_argument("--limit", type=int, default=384, help="images to use (spread over the classes)")
    p.add_argument("--size", type=int, default=224, help="encoder input size (ViT-B/16: 224)")
    p.add_argument("--resize-mode", choices=["exact", "shorter"], default="exact")
    p.add_argument("--workers", default="0,2", help="comma-separated DataLoader worker counts")
    p.add_argument("--build-workers", type=int, default=0, help="processes that build the cache")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--batches", type=int, default=4, help="timed batches per measurement")
    p.add_argument("--threads", type=int, default=1, help="torch threads in the main process")
    p.add_argument("--cache-dir", type=Path, default=None, help="default: a temporary folder")
    p.add_argument(
        "--gpu-json", type=Path, default=None, help="bench/gpu.py output to compare with"
    )
    p.add_argument("--json", type=Path, default=None, help="write the full numbers here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    folder = SceneFolder(args.data)
    samples = folder.samples[:: max(1, len(folder.samples) // args.limit)][: args.limit]
    preprocess = ImagePreprocess(args.size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), args.resize_mode)
    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = args.cache_dir or Path(tmp) / "cache"
        result = run(
            samples,
            preprocess=preprocess,
            workers=[int(w) for w in args.workers.split(",")],
            batch=args.batch,
            batches=args.batches,
            cache_dir=cache_dir,
            build_workers=args.build_workers,
        )
    result["gpu"] = gpu_consumption(args.gpu_json)
    result["meta"] = {
        "data": str(args.data),
        "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs",
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "command": " ".join(sys.argv),
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
