"""`skyfuse zeroshot`: the unseen-class protocol on a scene folder (folds, trained candidates picked
on validation classes, baselines, metrics)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from skyfuse.cli.common import console, err_console, friendly_errors, set_quiet
from skyfuse.cli.configs import experiment_from_flags
from skyfuse.cli.options import (
    CacheDirOpt,
    CaptionsOpt,
    ConfigOpt,
    ExperimentPathArg,
    ImageEncoderOpt,
    ModelOpt,
    QuietOpt,
    SeedOpt,
    TextEncoderOpt,
)


class CaptionSetting(StrEnum):
    raw = "raw"
    masked = "masked"
    both = "both"


#: flag -> experiment key (`skyfuse.experiments.config.ZeroShotExperiment`)
ZEROSHOT_KEYS = {
    "path": "data.path",
    "captions": "data.captions",
    "descriptions": "data.descriptions",
    "out": "out",
    "model": "model.name",
    "width": "model.width",
    "image_grid": "model.image_grid",
    "fusion_head": "model.fusion_head",
    "unseen": "protocol.unseen",
    "folds": "protocol.folds",
    "mask": "protocol.mask",
    "seed": "seed",
    "image_encoder": "encoders.image",
    "text_encoder": "encoders.text",
    "cache_dir": "encoders.cache_dir",
    "clip": "encoders.clip",
    "epochs": "training.epochs",
    "lr": "training.lr",
    "batch_size": "training.batch_size",
    "fold_models": "outputs.fold_models",
    "final_model": "outputs.final_model",
}

OutOpt = Annotated[
    Path | None,
    typer.Option("--out", "-o", help="Output folder (metrics, folds, model, config.yaml)."),
]
UnseenOpt = Annotated[
    float,
    typer.Option(
        "--unseen", min=0.01, max=0.99, help="Fraction of classes held out as unseen per fold."
    ),
]
FoldsOpt = Annotated[int, typer.Option("--folds", "-k", min=1, help="Number of seen/unseen folds.")]
MaskOpt = Annotated[
    CaptionSetting,
    typer.Option(
        "--mask",
        help="Caption setting: raw, masked (verdicts removed, class words of all classes masked) or both.",
    ),
]
DescriptionsOpt = Annotated[
    Path | None,
    typer.Option(
        "--descriptions",
        "-d",
        help="YAML/JSON class file (name, phrase, descriptions; optional templates) overriding"
        " skyfuse's shipped descriptions. Start from --export-descriptions.",
    ),
]
ExportOpt = Annotated[
    Path | None,
    typer.Option(
        "--export-descriptions",
        help="Write the class descriptions skyfuse would use for PATH's classes to this file and exit.",
    ),
]
ClipOpt = Annotated[
    str | None,
    typer.Option(
        "--clip",
        help="Also score the CLIP baseline with openclip:<arch>@<checkpoint>. Needs the openclip"
        " extra: pip install 'skyfuse\\[openclip]' (open_clip_torch, timm, torchvision).",
    ),
]
FusionHeadOpt = Annotated[
    bool,
    typer.Option(
        "--fusion-head/--no-fusion-head",
        help="Also train the older fusion semantic head (--model over image and caption tokens;"
        " slow on a CPU) and list it beside the other methods; it is never the headline.",
    ),
]
EpochsOpt = Annotated[int, typer.Option("--epochs", min=1, help="Maximum epochs (fusion head).")]
LrOpt = Annotated[float, typer.Option("--lr", min=0.0, help="Learning rate (fusion head).")]
BatchOpt = Annotated[
    int, typer.Option("--batch-size", "-b", min=1, help="Training batch size (fusion head).")
]
WidthOpt = Annotated[
    int,
    typer.Option(
        "--width", min=8, help="Fusion width (a multiple of the 4 attention heads; fusion head)."
    ),
]
GridOpt = Annotated[
    int | None,
    typer.Option(
        "--image-grid",
        min=1,
        help="Average the image token grid to NxN regions before fusion (e.g. 2: 7x7 -> 2x2; much faster on a CPU).",
    ),
]
FoldModelsOpt = Annotated[
    bool,
    typer.Option(
        "--fold-models/--no-fold-models",
        help="Also save each fold's model (the picked method) under DIR/models/.",
    ),
]
FinalModelOpt = Annotated[
    bool,
    typer.Option(
        "--final-model/--no-final-model",
        help="Train the picked method once more on all classes and save it as DIR/model for"
        " `skyfuse predict --classes`.",
    ),
]


@friendly_errors
def zeroshot(
    ctx: typer.Context,
    path: ExperimentPathArg = None,
    config: ConfigOpt = None,
    captions: CaptionsOpt = None,
    out: OutOpt = None,
    model: ModelOpt = "dual",
    unseen: UnseenOpt = 0.25,
    folds: FoldsOpt = 3,
    seed: SeedOpt = 0,
    mask: MaskOpt = CaptionSetting.both,
    descriptions: DescriptionsOpt = None,
    export_descriptions: ExportOpt = None,
    image_encoder: ImageEncoderOpt = "efficientnet-lite0",
    text_encoder: TextEncoderOpt = "minilm",
    clip: ClipOpt = None,
    fusion_head: FusionHeadOpt = False,
    epochs: EpochsOpt = 30,
    lr: LrOpt = 1e-3,
    batch_size: BatchOpt = 64,
    width: WidthOpt = 256,
    image_grid: GridOpt = None,
    cache_dir: CacheDirOpt = None,
    fold_models: FoldModelsOpt = False,
    final_model: FinalModelOpt = True,
    quiet: QuietOpt = False,
) -> None:
    """Zero-shot classification of classes never seen in training, with mean ± std over folds.

    Classes are split into seen and unseen (seeded; unseen sets disjoint across folds when possible; fold files in DIR/folds/). The image side (pooled image vector) is mapped into the text encoder's sentence space, trained on seen classes to be near each image's own caption (LiT) and its class embedding; it is scored alone and in a weighted ensemble with the caption score, with calibrated stacking for the generalised setting. Epochs, temperature, loss mix, ensemble weight and calibration are all chosen on validation classes held out from the seen classes; the candidate with the best validation score is the headline. Unseen classes are scored by cosine similarity to their embeddings (prompt templates + descriptions, embedded by --text-encoder). The caption-only baseline (and CLIP with --clip) is scored on the same images.

    Writes DIR/metrics.json: metrics["method"] (the picked method), metrics["zsl"]["top1"]["mean"] / ["std"], likewise zsl.top5, gzsl.seen, gzsl.unseen, gzsl.h (the picked method, raw captions); metrics["baselines"]["caption_only"] in the same shape; metrics["settings"]["masked"] for masked captions. Also DIR/metrics.md (every method, the picked one marked), DIR/config.yaml (every setting; rerun with --config) and DIR/model, the picked method trained on all classes for `skyfuse predict DIR/model IMAGES --classes "a,b"`.

    Example: skyfuse zeroshot data/aid --captions rsicd/ --unseen 0.25 --folds 3 --out runs/zs
    """
    from skyfuse.experiments.config import ZeroShotExperiment
    from skyfuse.experiments.zeroshot import export_descriptions as export
    from skyfuse.experiments.zeroshot import run_zeroshot_experiment

    set_quiet(quiet)
    exp = experiment_from_flags(
        ctx,
        ZeroShotExperiment,
        locals(),
        ZEROSHOT_KEYS,
        config_file=config,
        convert={"mask": lambda m: m.value},
    )
    if export_descriptions is not None:
        n = export(exp.data.path, exp.data.descriptions, export_descriptions)
        console.print(f"wrote {n} class descriptions to {export_descriptions}")
        return
    run_zeroshot_experiment(
        exp, log=lambda msg: err_console.print(msg, highlight=False), show_progress=not quiet
    )
    assert exp.out is not None
    console.print(f"metrics: {exp.out / 'metrics.json'} and {exp.out / 'metrics.md'}")


def register(app: typer.Typer) -> None:
    app.command("zeroshot")(zeroshot)
