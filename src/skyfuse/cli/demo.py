"""`skyfuse demo`: the whole method offline on synthetic scenes, in a few minutes on a CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from skyfuse.cli.common import console, friendly_errors

DemoOutOpt = Annotated[
    Path, typer.Option("--out", "-o", help="Output folder (reused if it exists).")
]
DemoPerClassOpt = Annotated[int, typer.Option("--per-class", help="Synthetic images per class.")]
DemoSeedsOpt = Annotated[
    str, typer.Option("--seeds", help="Comma-separated seeds (one split and training run each).")
]
DemoEpochsOpt = Annotated[int, typer.Option("--epochs", help="Maximum epochs per model.")]


@friendly_errors
def demo(
    out: DemoOutOpt = Path("demo-out"),
    per_class: DemoPerClassOpt = 30,
    seeds: DemoSeedsOpt = "0",
    epochs: DemoEpochsOpt = 15,
) -> None:
    """Run the main job offline: synthetic scenes -> attribute captions -> bundled encoders -> image, text, concat and dual models compared.

    Writes OUT/bench.md and .csv (the table), OUT/confusion_dual.png, OUT/attention/*.png (where the dual model looks) and OUT/runs/<model>-s<seed>/ with a model bundle each. Nothing is downloaded; the scenes are synthetic and the captions are measured image statistics, not a VLM.
    """
    import time

    from skyfuse.cli.configs import parse_seeds
    from skyfuse.training.demo import run_demo

    t0 = time.perf_counter()
    result = run_demo(
        out,
        per_class=per_class,
        seeds=parse_seeds(seeds),
        epochs=epochs,
        say=lambda s: console.print(s, highlight=False, soft_wrap=True),
    )
    steps = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
    console.print(
        f"done in {time.perf_counter() - t0:.0f} s ({steps}); outputs in {result.out_dir}",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
