"""What the per-epoch log and the run's pictures cost: `fit_phase` with ``logger="none"`` vs ``"csv"``
(and TensorBoard when tensorboardX/tensorboard is installed), plus `plot_run_curves` and a
`skyfuse report` page, in one process on the same in-memory features (the bundled encoders' shapes:
49 image tokens x 1280, 32 caption tokens x 384), alternating the loggers over ``--repeats``.

Example: python bench/logging_overhead.py --images 1000 --epochs 10 --repeats 3
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch


def features(n: int, classes: int) -> object:
    from skyfuse.training.data import TensorSet

    g = torch.Generator().manual_seed(0)
    return TensorSet(
        torch.randn(n, 49, 1280, generator=g).half(),
        torch.ones(n, 49, dtype=torch.bool),
        torch.randn(n, 32, 384, generator=g).half(),
        torch.arange(32)[None, :] < torch.randint(10, 33, (n, 1), generator=g),
        torch.randint(0, classes, (n,), generator=g),
        [f"c/{i}" for i in range(n)],
    )


def fit_seconds(data: object, classes: int, epochs: int, logger: str, run_dir: Path) -> float:
    from skyfuse.models import FusionConfig, create_model
    from skyfuse.training.config import TrainConfig
    from skyfuse.training.fit import fit_phase

    torch.manual_seed(0)
    cfg = FusionConfig(model="dual", image_dim=1280, text_dim=384, num_classes=classes, width=128)
    t0 = time.perf_counter()
    fit_phase(
        create_model(cfg),
        data,  # type: ignore[arg-type]
        None,
        TrainConfig(epochs=epochs, batch_size=64, logger=logger),  # type: ignore[arg-type]
        run_dir=run_dir if logger != "none" else None,
    )
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--classes", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from skyfuse.training.loop import check_logger

    loggers = ["none", "csv"]
    try:
        check_logger("tensorboard")
        loggers.append("tensorboard")
    except Exception:
        pass
    data = features(args.images, args.classes)
    times: dict[str, list[float]] = {k: [] for k in loggers}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for kind in loggers:
                run_dir = Path(tmp) / f"{kind}-{r}"
                times[kind].append(fit_seconds(data, args.classes, args.epochs, kind, run_dir))
        rows = [
            {"epoch": float(e), "train_loss": 1.0 / (e + 1), "train_acc": e / args.epochs}
            for e in range(args.epochs)
        ]
        from skyfuse.reports.curves import plot_curves

        t0 = time.perf_counter()
        plot_curves(rows, Path(tmp) / "curves.png", chosen_epoch=args.epochs - 1, title="x")
        curves = time.perf_counter() - t0
    base = statistics.median(times["none"])
    print(
        f"{platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()},"
        f" {args.images} images x {args.epochs} epochs, median of {args.repeats}"
    )
    print("| logger | fit seconds (median) | ratio to none |")
    print("|---|---|---|")
    for kind in loggers:
        med = statistics.median(times[kind])
        print(f"| {kind} | {med:.2f} | {med / base:.3f} |")
    print(f"\ncurves.png: {curves:.2f} s")


if __name__ == "__main__":
    main()
