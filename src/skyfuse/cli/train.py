"""`skyfuse train`, `skyfuse evaluate`, `skyfuse bench`: fusion models on frozen features (or end to end)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from skyfuse.cli.common import console, err_console, friendly_errors
from skyfuse.cli.options import (
    MODELS_HELP,
    BatchSizeOpt,
    CacheDirOpt,
    CaptionDropoutOpt,
    CaptionsOpt,
    DropoutOpt,
    EpochsOpt,
    HeadsOpt,
    ImageEncoderOpt,
    LevelsOpt,
    LinearPathOpt,
    LrOpt,
    ModelOpt,
    PatienceOpt,
    ProtocolOpt,
    RefitOpt,
    ScenePathArg,
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


def _fusion(
    width: int,
    heads: int,
    levels: int,
    dropout: float,
    shortcut: bool,
    shared: bool,
    token_drop: float = 0.0,
    linear_path: bool = True,
    caption_dropout: float = 0.0,
) -> dict[str, Any]:
    return {
        "linear_path": linear_path,
        "caption_dropout": caption_dropout,
        "width": width,
        "heads": heads,
        "levels": levels,
        "dropout": dropout,
        "shortcut": shortcut,
        "shared_weights": shared,
        "token_drop": token_drop,
    }


def _seeds(text: str) -> list[int]:
    from skyfuse.errors import ConfigError

    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(
            f"--seeds {text!r}: give integers separated by commas, e.g. 0,1,2"
        ) from None
    if not seeds:
        raise ConfigError("--seeds is empty; give e.g. 0,1,2")
    return seeds


def _check_model(model: str) -> None:
    """One line naming the flag for an unknown --model (instead of a pydantic message about FusionConfig)."""
    from skyfuse.errors import ConfigError
    from skyfuse.models import list_models

    known = list_models()
    if model.lower() not in known:
        raise ConfigError(f"--model {model}: unknown; use one of {', '.join(known)}")


def _recorded_captions(run_dir: Path) -> Path | None:
    """The captions file a `skyfuse train` run recorded in its metrics.json, if it still exists."""
    try:
        recorded = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8")).get(
            "captions"
        )
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(recorded, str) and Path(recorded).exists():
        return Path(recorded)
    return None


def _trained_views(bundle: Any) -> int:
    """The dihedral views a bundle was trained and tested with (1 for bundles older than views)."""
    views = (bundle.extra.get("train_config") or {}).get("views", 1)
    return int(views) if views in (1, 2, 4, 8) else 1


def _warn_dropped(dropped: list[str], skipped: dict[str, str]) -> None:
    if dropped:
        why = skipped.get(dropped[0], "no features")
        err_console.print(
            f"[yellow]warning:[/yellow] {len(dropped)} image(s) of the split left out, e.g. {dropped[0]}: {why}",
            highlight=False,
            soft_wrap=True,
        )


@friendly_errors
def train(
    path: ScenePathArg,
    captions: CaptionsOpt = None,
    model: ModelOpt = "dual",
    protocol: ProtocolOpt = None,
    train_ratio: TrainRatioOpt = None,
    split_file: Path | None = typer.Option(
        None, "--split", help="A saved split JSON (from `skyfuse split` or DIR/split.json)."
    ),
    val: ValOpt = 0.1,
    seed: SeedOpt = 0,
    out: Path = typer.Option(
        ..., "--out", "-o", help="Run folder: metrics.json, report.md, confusion.png, model/."
    ),
    epochs: EpochsOpt = 30,
    lr: LrOpt = 1e-3,
    batch_size: BatchSizeOpt = 64,
    weight_decay: float = typer.Option(0.05, "--weight-decay", help="AdamW weight decay."),
    schedule: str = typer.Option(
        "cosine", "--schedule", help="Learning-rate schedule: cosine, step or constant."
    ),
    label_smoothing: float = typer.Option(
        0.0, "--label-smoothing", help="Cross-entropy label smoothing (0 = off)."
    ),
    grad_clip: float = typer.Option(1.0, "--grad-clip", help="Gradient-norm clip (0 = off)."),
    patience: PatienceOpt = 10,
    monitor: str = typer.Option(
        "val_loss", "--monitor", help="Selection metric on val: val_loss or val_acc."
    ),
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
    shared_weights: bool = typer.Option(
        False, "--shared-weights", help="One set of fusion weights for every level (the paper's)."
    ),
    image_encoder: ImageEncoderOpt = "efficientnet-lite0",
    text_encoder: TextEncoderOpt = "minilm",
    cache_dir: CacheDirOpt = None,
    finetune: bool = typer.Option(
        False, "--finetune", help="End-to-end fine-tuning of encoders + fusion (for GPUs)."
    ),
    encoder_lr: float = typer.Option(
        1e-5, "--encoder-lr", help="Encoder learning rate with --finetune."
    ),
    augment: bool = typer.Option(
        True, "--augment/--no-augment", help="Flips and 90-degree rotations with --finetune."
    ),
    accelerator: str = typer.Option(
        "auto", "--accelerator", help="Lightning accelerator: auto, cpu, gpu."
    ),
    devices: str = typer.Option(
        "auto",
        "--devices",
        help="Lightning devices: auto (one device: the first GPU, else the CPU), a count, or ids like 0,1.",
    ),
    strategy: str = typer.Option("auto", "--strategy", help="Lightning strategy, e.g. ddp."),
    num_nodes: int = typer.Option(1, "--num-nodes", help="Lightning nodes."),
    precision: str | None = typer.Option(
        None, "--precision", help="Lightning precision, e.g. bf16-mixed, 16-mixed, 32-true."
    ),
    workers: int = typer.Option(2, "--workers", help="Image-loading workers with --finetune."),
    force: bool = typer.Option(
        False,
        "--force",
        help="Start afresh: remove the run in OUT (finished, interrupted or a different one) and train.",
    ),
) -> None:
    """Train one fusion model with an honest protocol and write OUT/metrics.json and OUT/model/.

    The default recipe: each image under its 8 rotations/flips (cached), a linear path in the model, and train+val for exactly --epochs (--selection val: early stopping on val instead); the test part is scored once at the end. By default encoders are frozen and their tokens come from the feature cache (fast on a CPU); a killed run resumes from OUT/checkpoints/ when rerun with the same command (OUT/run.json must match: same data, split, captions, encoders and settings).

    Example: skyfuse train data/aid --captions caps.jsonl --model dual --protocol aid-20 --seed 0 --out runs/dual-s0
    """
    from skyfuse.training.config import TrainConfig
    from skyfuse.training.distributed import is_rank_zero
    from skyfuse.training.fit import TrainingInterrupted

    _check_model(model)
    if (out / "metrics.json").is_file() and not force:  # before features are extracted
        from skyfuse.errors import ConfigError

        raise ConfigError(
            f"{out}: holds a finished run (metrics.json); pass --force to retrain or choose another --out"
        )
    cfg = TrainConfig(
        epochs=epochs,
        lr=lr,
        encoder_lr=encoder_lr,
        weight_decay=weight_decay,
        batch_size=batch_size,
        schedule=schedule,
        label_smoothing=label_smoothing,
        grad_clip=grad_clip or None,
        patience=patience,
        monitor=monitor,
        refit=refit,
        selection=selection,
        seed=seed,
        finetune=finetune,
        augment=augment,
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        num_nodes=num_nodes,
        precision=precision,
        num_workers=workers,
        views=views,
    )
    fusion = _fusion(
        width,
        heads,
        levels,
        dropout,
        shortcut,
        shared_weights,
        token_drop,
        linear_path,
        caption_dropout,
    )
    try:
        result = _train(
            path,
            captions,
            model,
            protocol,
            train_ratio,
            split_file,
            val,
            seed,
            out,
            cfg,
            fusion,
            image_encoder,
            text_encoder,
            cache_dir,
            force,
        )
    except TrainingInterrupted:
        err_console.print("interrupted; rerun the same command to resume", highlight=False)
        raise typer.Exit(130) from None
    if not is_rank_zero():  # DDP workers: rank 0 reports
        return
    t = result["test"]
    console.print(
        f"[bold]{result['model']}[/bold] test OA {100 * t['oa']:.2f} %  AA {100 * t['aa']:.2f} %"
        f"  kappa {t['kappa']:.4f}  ({t['n']} test images)",
        highlight=False,
    )
    console.print(
        f"wrote {out / 'metrics.json'}, {out / 'report.md'}, {out / 'model'}",
        highlight=False,
        soft_wrap=True,
    )


def _train(
    path: Path,
    captions: Path | None,
    model: str,
    protocol: str | None,
    train_ratio: float | None,
    split_file: Path | None,
    val: float,
    seed: int,
    out: Path,
    cfg: Any,
    fusion: dict[str, Any],
    image_encoder: str,
    text_encoder: str,
    cache_dir: Path | None,
    force: bool = False,
) -> dict[str, Any]:
    from skyfuse.training import prepare
    from skyfuse.training.runfolder import captions_digest

    folder = prepare.open_folder(path)
    split = prepare.resolve_split(
        folder,
        split_file=split_file,
        protocol=protocol,
        train_ratio=train_ratio,
        val=val,
        seed=seed,
    )
    caps = prepare.resolve_captions(folder, captions)
    if cfg.finetune:  # the paper's setting: the frozen-feature recipe (linear path) does not apply
        from skyfuse.training.finetune import run_finetune

        return run_finetune(
            folder,
            split,
            caps.texts,
            model=model,
            cfg=cfg,
            fusion={**fusion, "linear_path": False},
            out_dir=out,
            image_encoder=image_encoder,
            text_encoder=text_encoder,
            prompt_id=caps.prompt_id,
            caption_source=caps.provenance,
            cache_dir=cache_dir,
            force=force,
        )
    from skyfuse.training.run import run_training

    features = prepare.extract(
        folder,
        caps.texts,
        image_encoder=image_encoder,
        text_encoder=text_encoder,
        cache_dir=cache_dir,
        views=cfg.views,
    )
    split, dropped = prepare.restrict_split(split, set(features.rels))
    _warn_dropped(dropped, features.skipped)
    record: dict[str, Any] = {"dropped": dropped} if dropped else {}
    if captions is not None:  # lets `skyfuse evaluate RUN` find the same captions again
        record["captions"] = str(captions.resolve())
    bar = _EpochBar(cfg.epochs)
    with bar:
        result = run_training(
            features,
            split,
            model=model,
            cfg=cfg,
            fusion=fusion,
            out_dir=out,
            image_encoder=features.image_encoder_id,
            text_encoder=features.text_encoder_id,
            prompt_id=caps.prompt_id,
            caption_source=caps.provenance,
            encoder_names=(image_encoder, text_encoder),
            dataset=str(folder.root),
            on_epoch=bar.update,
            captions_digest=captions_digest(
                caps.texts, split.part("train") + split.part("val") + split.test
            ),
            force=force,
            record=record,
        )
    return result


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


@friendly_errors
def evaluate(
    model_dir: Path = typer.Argument(
        ..., help="A model bundle (RUN/model) or a run folder holding one."
    ),
    path: Path = typer.Argument(..., help="Scene folder with the same classes."),
    split_file: Path | None = typer.Option(
        None, "--split", help="Split JSON; its test part is scored (default: the run's split.json)."
    ),
    part: str = typer.Option(
        "test",
        "--part",
        help="Which part to score: test, val, train, trainval (of the split) or all (every image of the folder).",
    ),
    captions: Path | None = typer.Option(
        None,
        "--captions",
        "-c",
        help="Captions (as for train). Default: the captions file the run was trained with, else the folder's text/ tree.",
    ),
    cache_dir: CacheDirOpt = None,
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Folder for metrics.json, report.md and confusion.png."
    ),
) -> None:
    """Score a trained model bundle on a folder: OA, AA, kappa, per-class P/R/F1, confusion matrix.

    Example: skyfuse evaluate runs/dual-s0/model data/aid --split runs/dual-s0/split.json --out eval/
    """
    from skyfuse.data.splits import Split
    from skyfuse.errors import ConfigError
    from skyfuse.inference.loading import resolve_model_dir
    from skyfuse.training import prepare
    from skyfuse.training.bundle import load_bundle
    from skyfuse.training.data import TensorSet
    from skyfuse.training.evaluate import evaluate_model
    from skyfuse.training.run import markdown_report

    if part not in ("test", "val", "train", "trainval", "all"):
        raise ConfigError(f"--part {part}: use test, val, train, trainval or all")
    model_dir = resolve_model_dir(model_dir)  # a run folder (holding model/) or model/ itself
    run_dir = model_dir.parent
    if captions is None:
        captions = _recorded_captions(run_dir)
    if split_file is None and (run_dir / "split.json").is_file():
        split_file = run_dir / "split.json"
    bundle = load_bundle(model_dir)
    folder = prepare.open_folder(path, classes=bundle.class_names)
    if part == "all":
        rels = [s.rel for s in folder.samples]
    else:
        if split_file is None:
            raise ConfigError(
                "no split: pass --split FILE, or --part all to score every image of the folder"
            )
        split = Split.load(split_file)
        if list(split.classes) != list(bundle.class_names):
            raise ConfigError(
                f"{split_file}: its classes differ from the model's; use the split the model was trained with"
            )
        split.verify(folder)
        rels = split.part(part)
    caps = prepare.resolve_captions(folder, captions)
    image_name = bundle.extra.get("image_encoder_name") or bundle.image_encoder.rsplit("@", 1)[0]
    text_name = bundle.extra.get("text_encoder_name") or bundle.text_encoder.rsplit("@", 1)[0]
    encoders = None
    if bundle.extra.get("finetuned_encoders"):
        from skyfuse.training.finetune import load_finetuned_encoders

        encoders = load_finetuned_encoders(model_dir, image_name, text_name)
    features = prepare.extract(
        folder,
        caps.texts,
        image_encoder=image_name,
        text_encoder=text_name,
        cache_dir=cache_dir,
        encoders=encoders,
        views=1 if encoders is not None else _trained_views(bundle),
    )
    if encoders is None and (features.image_encoder_id, features.text_encoder_id) != (
        bundle.image_encoder,
        bundle.text_encoder,
    ):
        raise ConfigError(
            f"{model_dir}: trained on features of {bundle.image_encoder} / {bundle.text_encoder} but the encoders"
            f" now give {features.image_encoder_id} / {features.text_encoder_id}; use the same encoder weights"
        )
    have = set(features.rels)
    dropped = [r for r in rels if r not in have]
    _warn_dropped(dropped, features.skipped)
    if not len(dropped) < len(rels):
        raise ConfigError(
            f"{path}: none of the {len(rels)} image(s) of --part {part} has a caption or features; pass the --captions the model was trained with"
        )
    if 2 * len(dropped) > len(rels):
        err_console.print(
            f"[bold yellow]warning:[/bold yellow] {len(dropped)} of {len(rels)} image(s) of --part {part} were skipped"
            f" (no caption or features); the scores below cover only {len(rels) - len(dropped)}",
            highlight=False,
            soft_wrap=True,
        )
    data = TensorSet.from_features(features, [r for r in rels if r in have], bundle.class_names)
    metrics = evaluate_model(bundle.model, data, bundle.class_names)
    t = metrics
    console.print(
        f"{part}: OA {100 * t['oa']:.2f} %  AA {100 * t['aa']:.2f} %  kappa {t['kappa']:.4f}  ({t['n']} images)",
        highlight=False,
    )
    if out is not None:
        from skyfuse.reports.confusion import plot_confusion, save_confusion_json
        from skyfuse.reports.tables import write_atomic

        result = {
            "model": bundle.config.model,
            "dataset": str(folder.root),
            "protocol": None,
            "seed": None,
            "split": {"train": 0, "val": 0, "test": len(data)},
            "encoders": {
                "image": bundle.image_encoder,
                "text": bundle.text_encoder,
                "prompt_id": bundle.prompt_id,
            },
            "part": part,
            "test": metrics,
            "dropped": dropped,
        }
        write_atomic(out / "metrics.json", json.dumps(result, indent=1) + "\n")
        write_atomic(out / "report.md", markdown_report(result))
        save_confusion_json(metrics["confusion"], bundle.class_names, out / "confusion.json")
        plot_confusion(
            metrics["confusion"],
            bundle.class_names,
            out / "confusion.png",
            title=f"{bundle.config.model} — {part}",
        )
        console.print(f"wrote {out / 'metrics.json'}", highlight=False)


@friendly_errors
def bench(
    path: ScenePathArg,
    captions: CaptionsOpt = None,
    models: str = typer.Option(
        "dual,image,text,concat", "--models", help=f"Comma-separated models: {MODELS_HELP}."
    ),
    protocol: ProtocolOpt = None,
    train_ratio: TrainRatioOpt = None,
    seeds: str = typer.Option(
        "0,1,2", "--seeds", help="Comma-separated seeds; each gets its own split."
    ),
    val: ValOpt = 0.1,
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Folder for bench.md/.csv, runs.md/.csv and runs/ (resumable)."
    ),
    probes: bool = typer.Option(
        True,
        "--probes/--no-probes",
        help="Add logistic-regression probes on pooled features (image, text, image+text).",
    ),
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
    save_models: bool = typer.Option(
        False, "--save-models", help="Also write a model bundle per run."
    ),
    force: bool = typer.Option(
        False,
        "--force",
        help="Rerun every run afresh, replacing what OUT/runs holds (finished or from other settings).",
    ),
) -> None:
    """Compare models over seeded splits: a table of mean ± std (percent) with oa_mean, oa_std, ...

    Features are extracted once and shared by all runs; rows named probe-* are logistic-regression floors on the encoders' pooled vectors. With --out, a rerun skips finished runs whose run.json fingerprint matches (same seed, split, captions, encoders and settings) and refuses runs made otherwise; --force reruns them.

    Example: skyfuse bench data/whu-rs19 --captions caps.jsonl --models dual,image,text,concat --protocol whu-60 --seeds 0,1,2
    """
    from skyfuse.errors import ConfigError
    from skyfuse.reports.tables import to_markdown
    from skyfuse.training import prepare
    from skyfuse.training.bench import run_bench
    from skyfuse.training.config import TrainConfig
    from skyfuse.training.runfolder import captions_digest

    names = [m.strip().lower() for m in models.split(",") if m.strip()]
    if not names:
        raise ConfigError("--models is empty; give e.g. dual,image,text,concat")
    for name in names:  # before feature extraction, which takes minutes
        _check_model(name)
    seed_list = _seeds(seeds)
    if protocol is None and train_ratio is None:
        raise ConfigError("pass --protocol NAME (e.g. whu-60) or --train RATIO")
    cfg = TrainConfig(
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        patience=patience,
        refit=refit,
        selection=selection,
        views=views,
    )
    folder = prepare.open_folder(path)
    caps = prepare.resolve_captions(folder, captions)
    features = prepare.extract(
        folder,
        caps.texts,
        image_encoder=image_encoder,
        text_encoder=text_encoder,
        cache_dir=cache_dir,
        views=cfg.views,
    )
    if features.skipped:
        err_console.print(
            f"[yellow]warning:[/yellow] {len(features.skipped)} image(s) without features are left out"
        )

    def on_run(row: dict[str, Any]) -> None:
        err_console.print(
            f"{row['model']:<18} seed {row['seed']}: OA {100 * row['oa']:.2f} %  ({row['seconds']:.1f} s)",
            highlight=False,
        )

    table, _ = run_bench(
        features,
        folder,
        models=names,
        seeds=seed_list,
        protocol=protocol,
        train_ratio=train_ratio,
        val=val,
        cfg=cfg,
        fusion=_fusion(
            width, heads, levels, dropout, shortcut, False, token_drop, linear_path, caption_dropout
        ),
        probes=probes,
        out_dir=out,
        image_encoder=features.image_encoder_id,
        text_encoder=features.text_encoder_id,
        prompt_id=caps.prompt_id,
        caption_source=caps.provenance,
        encoder_names=(image_encoder, text_encoder),
        dataset=str(folder.root),
        save_models=save_models,
        on_run=on_run,
        captions_digest=captions_digest(caps.texts, features.rels),
        force=force,
    )
    console.print(
        f"\n{protocol or f'train {train_ratio}'} · seeds {seeds} · percent, mean ± sample std over seeds\n"
    )
    console.print(to_markdown(table), highlight=False, soft_wrap=True)
    if out is not None:
        console.print(f"wrote {out / 'bench.md'} and {out / 'bench.csv'}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("evaluate")(evaluate)
    app.command("bench")(bench)
