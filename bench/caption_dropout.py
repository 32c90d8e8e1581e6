"""Caption dropout: one bundle that predicts with and without captions (issue 13, BENCHMARKS.md).

Trains `dual` with the default recipe and ``caption_dropout`` = 0 and > 0 on seeded splits, then scores
each on the test split twice: with the captions, and image-only (every caption hidden: an all-False
text mask, what `skyfuse predict` sends when a caption-dropout bundle gets no caption). The `image`
model of the same recipe is the reference for image-only accuracy.

Example:
  OMP_NUM_THREADS=1 python bench/caption_dropout.py aid-masked --protocol aid-20 --seeds 0,1,2
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy as A  # the experiments' data and captions


def _sd(x: np.ndarray) -> float:
    return float(x.std(ddof=1)) if len(x) > 1 else 0.0


def main(argv: list[str] | None = None) -> int:
    ap = A.experiment_parser(__doc__)
    ap.add_argument("--rates", default="0,0.3")
    args = ap.parse_args(argv)

    from skyfuse.data.splits import make_split
    from skyfuse.models import FusionConfig, create_model
    from skyfuse.training.config import TrainConfig
    from skyfuse.training.data import TensorSet
    from skyfuse.training.evaluate import evaluate_model
    from skyfuse.training.fit import train_features

    cfg0 = TrainConfig()
    loaded = A.load_experiment(args.experiment, args.work, cfg0.views)
    if loaded is None:
        return 0
    folder, _, features = loaded
    rows: list[dict[str, float | str | int]] = []
    runs = [("image", 0.0)] + [("dual", float(r)) for r in args.rates.split(",")]
    for seed in [int(s) for s in args.seeds.split(",")]:
        split = make_split(folder, protocol=args.protocol, val=0.1, seed=seed)
        classes = list(split.classes)
        train = TensorSet.from_features(features, split.train, classes)
        val = TensorSet.from_features(features, split.val, classes)
        test = TensorSet.from_features(features, split.test, classes)
        no_caption = dataclasses.replace(
            test,
            text_tokens=torch.zeros(len(test), 1, test.text_dim, dtype=test.text_tokens.dtype),
            text_mask=torch.zeros(len(test), 1, dtype=torch.bool),
        )
        for name, rate in runs:
            t0 = time.perf_counter()
            fcfg = FusionConfig(
                model=name, image_dim=train.image_dim, text_dim=train.text_dim,
                num_classes=len(classes), width=128, linear_path=True, caption_dropout=rate,
            )  # fmt: skip
            out = train_features(
                lambda fcfg=fcfg: create_model(fcfg),
                train,
                val,
                cfg0.model_copy(update={"seed": seed}),
            )
            with_caps = evaluate_model(out.model, test, classes)["oa"]
            image_only = evaluate_model(out.model, no_caption, classes)["oa"]
            row = {"model": name, "caption_dropout": rate, "seed": seed,
                   "oa_with_captions": 100 * with_caps, "oa_image_only": 100 * image_only,
                   "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(
        "\n| model | caption dropout | test OA with captions | test OA image-only |\n|---|---|---|---|"
    )
    for name, rate in runs:
        sel = [r for r in rows if r["model"] == name and r["caption_dropout"] == rate]
        w = np.array([r["oa_with_captions"] for r in sel], dtype=float)
        i = np.array([r["oa_image_only"] for r in sel], dtype=float)
        print(
            f"| {name} | {rate} | {w.mean():.2f} ± {_sd(w):.2f} | {i.mean():.2f} ± {_sd(i):.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
