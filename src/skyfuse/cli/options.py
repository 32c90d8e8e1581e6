"""Typer parameters shared by several commands, declared once.

Each alias is ``Annotated[type, typer.Option(...)]`` (or ``typer.Argument``): the option names,
short flags, help text and checks live here, the default stays in the command's signature, e.g.
``captions: CaptionsOpt = None``. ``tests/cli/test_options.py`` checks that every command using an
alias shows the same help and the same default, so a re-declared copy that drifts is caught.

Only options that mean the same thing everywhere belong here. Options that differ in one command
(default, range or meaning) stay local to it: ``--batch-size`` of `features` (32, images per
batch), `zeroshot`'s ``--width`` (256), ``--epochs``, ``--lr`` and ``--batch-size`` (with ranges),
``--devices``/``--workers`` of `features` vs `train`, ``--out``, ``--split`` and the second
``PATH`` of `evaluate`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

MODELS_HELP = "dual, image, text, concat, t2i or i2t"

# --- data ---------------------------------------------------------------------------------------

ScenePathArg = Annotated[
    Path,
    typer.Argument(help="Scene folder: <class>/<image> or the paper layout (image/, text/)."),
]
ExperimentPathArg = Annotated[
    Path | None,
    typer.Argument(
        help="Scene folder: <class>/<image> or the paper layout (image/, text/); may come from --config.",
        show_default=False,
    ),
]
CaptionsOpt = Annotated[
    Path | None,
    typer.Option(
        "--captions",
        "-c",
        help="Captions: a store from `skyfuse caption`, a JSONL/CSV of path,caption, human caption"
        " sets (e.g. RSICD *_caps.txt) or a paper text/ tree. Default: the folder's own text/ tree.",
    ),
]
ProtocolOpt = Annotated[
    str | None,
    typer.Option("--protocol", "-p", help="Split protocol, e.g. aid-20, aid-50, whu-60, ucm-80."),
]
TrainRatioOpt = Annotated[
    float | None,
    typer.Option("--train", help="Training fraction per class instead of a protocol, e.g. 0.5."),
]
ValOpt = Annotated[
    float,
    typer.Option(
        "--val",
        help="Fraction of the training part held out as val (for --selection val; the default"
        " --selection fixed trains on it too).",
    ),
]
SeedOpt = Annotated[
    int,
    typer.Option(
        "--seed",
        help="Seed of the splits (and of zeroshot's class folds), the initial weights and the"
        " batch order.",
    ),
]

# --- encoders and the feature cache -------------------------------------------------------------

ImageEncoderOpt = Annotated[
    str,
    typer.Option(
        "--image-encoder",
        help="Image encoder: efficientnet-lite0 (bundled), hf:<hub id or folder>,"
        " openclip:<arch>@<checkpoint>.",
    ),
]
TextEncoderOpt = Annotated[
    str,
    typer.Option(
        "--text-encoder",
        help="Text encoder: minilm (bundled), hf:<hub id or folder>, openclip:<arch>@<checkpoint>.",
    ),
]
CacheDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        help="Feature cache folder. Default: $SKYFUSE_CACHE_DIR or ~/.cache/skyfuse/features.",
    ),
]

# --- fusion model -------------------------------------------------------------------------------

ModelOpt = Annotated[str, typer.Option("--model", "-m", help=f"Fusion model: {MODELS_HELP}.")]
WidthOpt = Annotated[
    int,
    typer.Option("--width", help="Fusion width (128 keeps CPU training fast; the paper uses 512)."),
]
HeadsOpt = Annotated[int, typer.Option("--heads", help="Attention heads.")]
LevelsOpt = Annotated[int, typer.Option("--levels", help="Fusion levels.")]
DropoutOpt = Annotated[float, typer.Option("--dropout", help="Dropout in the fusion network.")]
TokenDropOpt = Annotated[
    float,
    typer.Option(
        "--token-drop",
        min=0.0,
        max=0.95,
        help="Fraction of each sample's tokens hidden at random in training (0 = off); "
        "augmentation for frozen features.",
    ),
]
CaptionDropoutOpt = Annotated[
    float,
    typer.Option(
        "--caption-dropout",
        min=0.0,
        max=0.95,
        help="Fraction of training samples whose caption is hidden (0 = off); the bundle then also"
        " predicts from the image alone when no caption can be made (recorded in its config).",
    ),
]
ShortcutOpt = Annotated[
    bool,
    typer.Option("--shortcut/--no-shortcut", help="Feed pooled input projections to the head too."),
]

# --- training (train, bench) --------------------------------------------------------------------

EpochsOpt = Annotated[
    int,
    typer.Option(
        "--epochs",
        help="Epochs per run (with --selection val a maximum: early stopping may end sooner).",
    ),
]
LrOpt = Annotated[float, typer.Option("--lr", help="Learning rate of the fusion network (AdamW).")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", "-b", help="Training batch size.")]
PatienceOpt = Annotated[int, typer.Option("--patience", help="Early-stopping patience in epochs.")]
RefitOpt = Annotated[
    bool,
    typer.Option(
        "--refit", help="Choose the epoch count on val, then retrain on train+val for it."
    ),
]
ViewsOpt = Annotated[
    int,
    typer.Option(
        "--views",
        help="Dihedral views of each image for frozen features: 1 (off), 2, 4 or 8 (every rotation"
        " and flip, each cached); training draws one per sample, evaluation averages all"
        " (--finetune augments pixels instead).",
    ),
]
SelectionOpt = Annotated[
    str,
    typer.Option(
        "--selection",
        help="fixed: train on train+val for exactly --epochs (no choice rests on a small val split);"
        " val: early stopping on val (with --refit, retrain on train+val for the chosen count).",
    ),
]
LinearPathOpt = Annotated[
    bool,
    typer.Option(
        "--linear-path/--no-linear-path",
        help="Add a linear map of the pooled inputs to the logits (the probe inside the model),"
        " which the fusion corrects (frozen features; --finetune trains without it).",
    ),
]

# --- experiments (train, bench, zeroshot) --------------------------------------------------------

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="A YAML experiment file (e.g. a run's config.yaml); flags given beside it override it.",
    ),
]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress bars (for scripts and CI logs).")
]
LoggerOpt = Annotated[
    str,
    typer.Option(
        "--logger",
        help="Per-epoch metrics: csv (OUT/logs/metrics.csv), tensorboard, mlflow or wandb (their"
        " package must be installed), or none.",
    ),
]

__all__ = [
    "MODELS_HELP",
    "BatchSizeOpt",
    "CacheDirOpt",
    "CaptionDropoutOpt",
    "CaptionsOpt",
    "ConfigOpt",
    "DropoutOpt",
    "EpochsOpt",
    "ExperimentPathArg",
    "HeadsOpt",
    "ImageEncoderOpt",
    "LevelsOpt",
    "LinearPathOpt",
    "LoggerOpt",
    "LrOpt",
    "ModelOpt",
    "PatienceOpt",
    "ProtocolOpt",
    "QuietOpt",
    "RefitOpt",
    "ScenePathArg",
    "SeedOpt",
    "SelectionOpt",
    "ShortcutOpt",
    "TextEncoderOpt",
    "TokenDropOpt",
    "TrainRatioOpt",
    "ValOpt",
    "ViewsOpt",
    "WidthOpt",
]
