"""Fine-tuning epoch time, decode-every-epoch path vs the pixel cache + GpuAugment path, same process.

Tiny random Hugging Face encoders (tests/encoders/tiny_models.py) keep the model cost small, so the
figure is mostly the input pipeline. CPU-only figures; on a GPU the gap is what decides whether it is fed.

    OMP_NUM_THREADS=1 .venv/bin/python bench/finetune_pipeline.py /work/shared/data/aid-minitest
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="a scene folder with image/ and text/ (paper layout)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from tests.encoders import tiny_models

    from skyfuse.data.folder import SceneFolder
    from skyfuse.data.splits import make_split
    from skyfuse.training.config import TrainConfig
    from skyfuse.training.finetune import run_finetune

    folder = SceneFolder(args.data)
    captions = folder.texts()
    split = make_split(folder, train=0.6, val=0.2, seed=0)
    cfg = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, finetune=True, patience=args.epochs,
        num_workers=args.workers, accelerator="cpu", devices="1",
    )  # fmt: skip
    report: dict[str, object] = {
        "images": len(folder),
        "train": len(split.train),
        "epochs": args.epochs,
    }
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        vit = tiny_models.make_vit(t / "vit")
        bert = tiny_models.make_bert(t / "bert")
        for name, cached in (
            ("decode", False),
            ("pixel-cache", True),
            ("pixel-cache-reused", True),
        ):
            t0 = time.perf_counter()
            result = run_finetune(
                folder, split, captions, model="dual", cfg=cfg, fusion={"width": 16, "heads": 2},
                out_dir=t / name, image_encoder=f"hf:{vit}", text_encoder=f"hf:{bert}",
                pixel_cache=cached, cache_dir=t / "cache",
            )  # fmt: skip
            epochs = [row["seconds"] for row in result["training"]["history"]]
            report[name] = {
                "run_s": round(time.perf_counter() - t0, 2),
                "epoch_s_median": round(statistics.median(epochs), 3),
                "epoch_s": [round(e, 3) for e in epochs],
                "test_oa": result["test"]["oa"],
            }
            print(name, report[name], flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
