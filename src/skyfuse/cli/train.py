"""`skyfuse train`, `skyfuse evaluate`, `skyfuse bench`: fusion models on frozen features (or end to end).

Each command builds an experiment (`skyfuse.experiments`) from ``--config`` and the flags typed beside
it, and hands it to the library; the flag -> config key tables below are the whole mapping.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import rich.markup
import typer

from skyfuse.cli.common import console, err_console, friendly_errors, set_quiet
from skyfuse.cli.configs import experiment_from_flags, parse_seeds
from skyfuse.cli.options import (
    MODELS_HELP,
    BatchSizeOpt,
    CacheDirOpt,
    CaptionDropoutOpt,
    CaptionsOpt,
    ConfigOpt,
    DropoutOpt,
    EpochsOpt,
    ExperimentPathArg,
    HeadsOpt,
    ImageEncoderOpt,
    LevelsOpt,
    LinearPathOpt,
    LoggerOpt,
    LrOpt,
    ModelOpt,
    PatienceOpt,
    ProtocolOpt,
    QuietOpt,
    RefitOpt,
    SeedOpt,
    SelectionOpt,
    ShortcutOpt,
    TextEncoderOpt,
    TokenDropOpt,
    TrainRatioOpt,
    ValOpt,
    ViewsOpt,
    WidthOpt,
)

#: flags of train and bench that land in the same experiment keys
_COMMON_KEYS = {
    "path": "data.path",
    "captions": "data.captions",
    "protocol": "data.protocol",
    "train_ratio": "data.train_ratio",
    "val": "data.val",
    "out": "out",
    "image_encoder": "encoders.image",
    "text_encoder": "encoders.text",
    "cache_dir": "encoders.cache_dir",
    **{
        k: f"training.{k}"
        for k in ("epochs", "lr", "batch_size", "patience", "refit", "selection", "views", "logger")
    },
}
_FUSION = (
    "width",
    "heads",
    "levels",
    "dropout",
    "token_drop",
    "caption_dropout",
    "shortcut",
    "linear_path",
    "shared_weights",
)
TRAIN_KEYS = {
    **_COMMON_KEYS,
    "split_file": "data.split",
    "seed": "seed",
    "model": "model.name",
    "workers": "training.num_workers",
    **{k: f"model.{k}" for k in _FUSION},
    **{
        k: f"training.{k}"
        for k in (
            "weight_decay",
            "schedule",
            "label_smoothing",
            "grad_clip",
            "monitor",
            "finetune",
            "encoder_lr",
            "augment",
            "accelerator",
            "devices",
            "strategy",
            "num_nodes",
            "precision",
        )
    },
}
BENCH_KEYS = {
    **_COMMON_KEYS,
    "models": "models",
    "seeds": "seeds",
    "probes": "probes",
    "save_models": "save_models",
    **{k: f"fusion.{k}" for k in _FUSION},
}
_CONVERT = {
    "grad_clip": lambda v: v or None,
    "seeds": parse_seeds,
    "models": lambda v: [m.strip().lower() for m in v.split(",") if m.strip()],
}

SplitOpt = Annotated[
    Path | None,
    typer.Option("--split", help="A saved split JSON (from `skyfuse split` or DIR/split.json)."),
]
OutOpt = Annotated[
    Path | None,
    typer.Option(
        "--out",
        "-o",
        help="Run folder: metrics.json, config.yaml, report.md, curves.png, logs/, model/.",
    ),
]
WeightDecayOpt = Annotated[float, typer.Option("--weight-decay", help="AdamW weight decay.")]
ScheduleOpt = Annotated[
    str, typer.Option("--schedule", help="Learning-rate schedule: cosine, step or constant.")
]
SmoothingOpt = Annotated[
    float, typer.Option("--label-smoothing", help="Cross-entropy label smoothing (0 = off).")
]
GradClipOpt = Annotated[float, typer.Option("--grad-clip", help="Gradient-norm clip (0 = off).")]
MonitorOpt = Annotated[
    str, typer.Option("--monitor", help="Selection metric on val: val_loss or val_acc.")
]
SharedOpt = Annotated[
    bool,
    typer.Option(
        "--shared-weights", help="One set of fusion weights for every level (the paper's)."
    ),
]
FinetuneOpt = Annotated[
    bool, typer.Option("--finetune", help="End-to-end fine-tuning of encoders + fusion (for GPUs).")
]
EncoderLrOpt = Annotated[
    float, typer.Option("--encoder-lr", help="Encoder learning rate with --finetune.")
]
AugmentOpt = Annotated[
    bool,
    typer.Option("--augment/--no-augment", help="Flips and 90-degree rotations with --finetune."),
]
AcceleratorOpt = Annotated[
    str, typer.Option("--accelerator", help="Lightning accelerator: auto, cpu, gpu.")
]
DevicesOpt = Annotated[
    str,
    typer.Option(
        "--devices",
        help="Lightning devices: auto (one device: the first GPU, else the CPU), a count, or ids like 0,1.",
    ),
]
StrategyOpt = Annotated[str, typer.Option("--strategy", help="Lightning strategy, e.g. ddp.")]
NodesOpt = Annotated[int, typer.Option("--num-nodes", help="Lightning nodes.")]
PrecisionOpt = Annotated[
    str | None,
    typer.Option("--precision", help="Lightning precision, e.g. bf16-mixed, 16-mixed, 32-true."),
]
WorkersOpt = Annotated[
    int, typer.Option("--workers", help="Image-loading workers with --finetune.")
]
ForceOpt = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Start afresh: remove the run in OUT (finished, interrupted or a different one) and train.",
    ),
]


@friendly_errors
def train(
    ctx: typer.Context,
    path: ExperimentPathArg = None,
    config: ConfigOpt = None,
    captions: CaptionsOpt = None,
    model: ModelOpt = "dual",
    protocol: ProtocolOpt = None,
    train_ratio: TrainRatioOpt = None,
    split_file: SplitOpt = None,
    val: ValOpt = 0.1,
    seed: SeedOpt = 0,
    out: OutOpt = None,
    epochs: EpochsOpt = 30,
    lr: LrOpt = 1e-3,
    batch_size: BatchSizeOpt = 64,
    weight_decay: WeightDecayOpt = 0.05,
    schedule: ScheduleOpt = "cosine",
    label_smoothing: SmoothingOpt = 0.0,
    grad_clip: GradClipOpt = 1.0,
    patience: PatienceOpt = 10,
    monitor: MonitorOpt = "val_loss",
    refit: RefitOpt = False,
    selection: SelectionOpt = "fixed",
    width: WidthOpt = 128,
    heads: HeadsOpt = 4,
    levels: LevelsOpt = 2,
    dropout: DropoutOpt = 0.1,
    token_drop: TokenDropOpt = 0.0,
    caption_dropout: CaptionDropoutOpt = 0.0,
    views: ViewsOpt = 8,
    shortcut: ShortcutOpt = True,
    linear_path: LinearPathOpt = True,
    shared_weights: SharedOpt = False,
    image_encoder: ImageEncoderOpt = "efficientnet-lite0",
    text_encoder: TextEncoderOpt = "minilm",
    cache_dir: CacheDirOpt = None,
    finetune: FinetuneOpt = False,
    encoder_lr: EncoderLrOpt = 1e-5,
    augment: AugmentOpt = True,
    accelerator: AcceleratorOpt = "auto",
    devices: DevicesOpt = "auto",
    strategy: StrategyOpt = "auto",
    num_nodes: NodesOpt = 1,
    precision: PrecisionOpt = None,
    workers: WorkersOpt = 2,
    logger: LoggerOpt = "csv",
    quiet: QuietOpt = False,
    force: ForceOpt = False,
) -> None:
    """Train one fusion model with an honest protocol and write OUT/metrics.json, OUT/config.yaml and OUT/model/.

    The default recipe: each image under its 8 rotations/flips (cached), a linear path in the model, and train+val for exactly --epochs (--selection val: early stopping on val instead); the test part is scored once at the end. Encoders are frozen and their tokens come from the feature cache (fast on a CPU) unless --finetune. OUT/config.yaml holds every setting: `skyfuse train --config OUT/config.yaml --out NEW` reruns it (flags beside --config override it). A killed run resumes from OUT/checkpoints/ when rerun with the same command (OUT/run.json must match).

    Example: skyfuse train data/aid --captions caps.jsonl --model dual --protocol aid-20 --seed 0 --out runs/dual-s0
    """
    from skyfuse.experiments.config import TrainExperiment
    from skyfuse.experiments.train import run_train

    set_quiet(quiet)
    exp = experiment_from_flags(
        ctx, TrainExperiment, locals(), TRAIN_KEYS, config_file=config, convert=_CONVERT
    )
    result = _with_epoch_bar(
        exp.training.epochs,
        lambda bar: run_train(exp, force=force, on_epoch=bar, warn=_warn, show_progress=not quiet),
    )
    if result is not None:  # DDP workers: rank 0 reports
        _print_run(result, exp.out)


def _warn(message: str) -> None:
    text = rich.markup.escape(message)
    err_console.print(f"[yellow]warning:[/yellow] {text}", highlight=False, soft_wrap=True)


def _with_epoch_bar(epochs: int, job: Any) -> dict[str, Any] | None:
    """Run ``job(on_epoch)`` under an epoch bar; Ctrl-C is exit 130; None on DDP workers."""
    from skyfuse.training.distributed import is_rank_zero
    from skyfuse.training.fit import TrainingInterrupted

    try:
        with _EpochBar(epochs) as bar:
            result = job(bar.update)
    except TrainingInterrupted:
        err_console.print("interrupted; rerun the same command to resume", highlight=False)
        raise typer.Exit(130) from None
    return result if is_rank_zero() else None


def _print_run(result: dict[str, Any], out: Path | None) -> None:
    t = result["test"]
    console.print(
        f"[bold]{result['model']}[/bold] test OA {100 * t['oa']:.2f} %  AA {100 * t['aa']:.2f} %"
        f"  kappa {t['kappa']:.4f}  ({t['n']} test images)",
        highlight=False,
    )
    if out is not None:
        console.print(
            f"wrote {out / 'metrics.json'}, {out / 'config.yaml'}, {out / 'report.md'}, {out / 'model'}",
            highlight=False,
            soft_wrap=True,
        )


class _EpochBar:
    """Progress over epochs, with the latest losses and val accuracy in the bar."""

    def __init__(self, epochs: int) -> None:
        from skyfuse.cli.common import progress

        self.progress = progress()
        self.epochs = epochs
        self.task: Any = None

    def __enter__(self) -> _EpochBar:
        self.progress.__enter__()
        self.task = self.progress.add_task("epochs", total=self.epochs)
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def update(self, row: dict[str, float]) -> None:
        if "val_loss" in row:
            extra = f"loss {row.get('train_loss', 0):.3f} val {row['val_loss']:.3f} acc {100 * row.get('val_acc', 0):.1f}%"
        else:
            extra = f"loss {row.get('train_loss', 0):.3f} (refit)"
            if int(row["epoch"]) == 0:
                self.progress.reset(self.task)
        self.progress.update(self.task, completed=int(row["epoch"]) + 1, extra=extra)


ModelDirArg = Annotated[
    Path, typer.Argument(help="A model bundle (RUN/model) or a run folder holding one.")
]
FolderArg = Annotated[Path, typer.Argument(help="Scene folder with the same classes.")]
EvalSplitOpt = Annotated[
    Path | None,
    typer.Option(
        "--split", help="Split JSON; its test part is scored (default: the run's split.json)."
    ),
]
PartOpt = Annotated[
    str,
    typer.Option(
        "--part",
        help="Which part to score: test, val, train, trainval (of the split) or all (every image of the folder).",
    ),
]
EvalCaptionsOpt = Annotated[
    Path | None,
    typer.Option(
        "--captions",
        "-c",
        help="Captions (as for train). Default: the captions file the run was trained with, else the folder's text/ tree.",
    ),
]
EvalOutOpt = Annotated[
    Path | None,
    typer.Option("--out", "-o", help="Folder for metrics.json, report.md and confusion.png."),
]


@friendly_errors
def evaluate(
    model_dir: ModelDirArg,
    path: FolderArg,
    split_file: EvalSplitOpt = None,
    part: PartOpt = "test",
    captions: EvalCaptionsOpt = None,
    cache_dir: CacheDirOpt = None,
    out: EvalOutOpt = None,
) -> None:
    """Score a trained model bundle on a folder: OA, AA, kappa, per-class P/R/F1, confusion matrix.

    Example: skyfuse evaluate runs/dual-s0/model data/aid --split runs/dual-s0/split.json --out eval/
    """
    from skyfuse.experiments.evaluate import evaluate_bundle

    t = evaluate_bundle(
        model_dir,
        path,
        split_file=split_file,
        part=part,
        captions=captions,
        cache_dir=cache_dir,
        out=out,
        warn=_warn,
    )
    console.print(
        f"{part}: OA {100 * t['oa']:.2f} %  AA {100 * t['aa']:.2f} %  kappa {t['kappa']:.4f}  ({t['n']} images)",
        highlight=False,
    )
    if out is not None:
        console.print(f"wrote {out / 'metrics.json'}", highlight=False)


ModelsOpt = Annotated[str, typer.Option("--models", help=f"Comma-separated models: {MODELS_HELP}.")]
SeedsOpt = Annotated[
    str, typer.Option("--seeds", help="Comma-separated seeds; each gets its own split.")
]
BenchOutOpt = Annotated[
    Path | None,
    typer.Option(
        "--out",
        "-o",
        help="Folder for bench.md/.csv, runs.md/.csv, report.html, config.yaml and runs/ (resumable).",
    ),
]
ProbesOpt = Annotated[
    bool,
    typer.Option(
        "--probes/--no-probes",
        help="Add logistic-regression probes on pooled features (image, text, image+text).",
    ),
]
SaveModelsOpt = Annotated[
    bool, typer.Option("--save-models", help="Also write a model bundle per run.")
]
BenchForceOpt = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Rerun every run afresh, replacing what OUT/runs holds (finished or from other settings).",
    ),
]


@friendly_errors
def bench(
    ctx: typer.Context,
    path: ExperimentPathArg = None,
    config: ConfigOpt = None,
    captions: CaptionsOpt = None,
    models: ModelsOpt = "dual,image,text,concat",
    protocol: ProtocolOpt = None,
    train_ratio: TrainRatioOpt = None,
    seeds: SeedsOpt = "0,1,2",
    val: ValOpt = 0.1,
    out: BenchOutOpt = None,
    probes: ProbesOpt = True,
    epochs: EpochsOpt = 30,
    lr: LrOpt = 1e-3,
    batch_size: BatchSizeOpt = 64,
    patience: PatienceOpt = 10,
    refit: RefitOpt = False,
    selection: SelectionOpt = "fixed",
    width: WidthOpt = 128,
    heads: HeadsOpt = 4,
    levels: LevelsOpt = 2,
    dropout: DropoutOpt = 0.1,
    token_drop: TokenDropOpt = 0.0,
    caption_dropout: CaptionDropoutOpt = 0.0,
    views: ViewsOpt = 8,
    shortcut: ShortcutOpt = True,
    linear_path: LinearPathOpt = True,
    image_encoder: ImageEncoderOpt = "efficientnet-lite0",
    text_encoder: TextEncoderOpt = "minilm",
    cache_dir: CacheDirOpt = None,
    save_models: SaveModelsOpt = False,
    logger: LoggerOpt = "csv",
    quiet: QuietOpt = False,
    force: BenchForceOpt = False,
) -> None:
    """Compare models over seeded splits: a table of mean ± std (percent) with oa_mean, oa_std, ...

    Features are extracted once and shared by all runs; rows named probe-* are logistic-regression floors on the encoders' pooled vectors. With --out, OUT/config.yaml holds every setting (rerun with --config) and OUT/report.html shows the comparison; a rerun skips finished runs whose run.json fingerprint matches (same seed, split, captions, encoders and settings) and refuses runs made otherwise; --force reruns them.

    Example: skyfuse bench data/whu-rs19 --captions caps.jsonl --models dual,image,text,concat --protocol whu-60 --seeds 0,1,2
    """
    from skyfuse.experiments.bench import run_bench_experiment
    from skyfuse.experiments.config import BenchExperiment
    from skyfuse.reports.tables import to_markdown

    set_quiet(quiet)
    exp = experiment_from_flags(
        ctx, BenchExperiment, locals(), BENCH_KEYS, config_file=config, convert=_CONVERT
    )
    table = run_bench_experiment(
        exp, force=force, on_run=_print_bench_run, warn=_warn, show_progress=not quiet
    )
    where = exp.data.protocol or f"train {exp.data.train_ratio}"
    seed_text = ",".join(map(str, exp.seeds))
    console.print(f"\n{where} · seeds {seed_text} · percent, mean ± sample std over seeds\n")
    console.print(to_markdown(table), highlight=False, soft_wrap=True)
    if exp.out is not None:
        console.print(
            f"wrote {exp.out / 'bench.md'}, {exp.out / 'bench.csv'}, {exp.out / 'report.html'} and {exp.out / 'config.yaml'}",
            highlight=False,
        )


def _print_bench_run(row: dict[str, Any]) -> None:
    err_console.print(
        f"{row['model']:<18} seed {row['seed']}: OA {100 * row['oa']:.2f} %  ({row['seconds']:.1f} s)",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("evaluate")(evaluate)
    app.command("bench")(bench)
