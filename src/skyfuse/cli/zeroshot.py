"""`skyfuse zeroshot`: the unseen-class protocol on a scene folder (folds, trained candidates picked
on validation classes, baselines, metrics)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from skyfuse.cli.common import console, err_console, friendly_errors
from skyfuse.cli.options import (
    CacheDirOpt,
    CaptionsOpt,
    ImageEncoderOpt,
    ModelOpt,
    ScenePathArg,
    SeedOpt,
    TextEncoderOpt,
)


class CaptionSetting(StrEnum):
    raw = "raw"
    masked = "masked"
    both = "both"


@friendly_errors
def zeroshot(
    path: ScenePathArg,
    captions: CaptionsOpt = None,
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (metrics, folds, model)."),
    model: ModelOpt = "dual",
    unseen: float = typer.Option(
        0.25,
        "--unseen",
        min=0.01,
        max=0.99,
        help="Fraction of classes held out as unseen per fold.",
    ),
    folds: int = typer.Option(3, "--folds", "-k", min=1, help="Number of seen/unseen folds."),
    seed: SeedOpt = 0,
    mask: CaptionSetting = typer.Option(
        CaptionSetting.both,
        "--mask",
        help="Caption setting: raw, masked (verdicts removed, class words of all classes masked) or both.",
    ),
    descriptions: Path | None = typer.Option(
        None,
        "--descriptions",
        "-d",
        help="YAML/JSON class file (name, phrase, descriptions; optional templates) overriding"
        " skyfuse's shipped descriptions. Start from --export-descriptions.",
    ),
    export_descriptions: Path | None = typer.Option(
        None,
        "--export-descriptions",
        help="Write the class descriptions skyfuse would use for PATH's classes to this file and exit.",
    ),
    image_encoder: ImageEncoderOpt = "efficientnet-lite0",
    text_encoder: TextEncoderOpt = "minilm",
    clip: str | None = typer.Option(
        None,
        "--clip",
        help="Also score the CLIP baseline with openclip:<arch>@<checkpoint>. Needs the openclip"
        " extra: pip install 'skyfuse\\[openclip]' (open_clip_torch, timm, torchvision).",
    ),
    fusion_head: bool = typer.Option(
        False,
        "--fusion-head/--no-fusion-head",
        help="Also train the older fusion semantic head (--model over image and caption tokens;"
        " slow on a CPU) and list it beside the other methods; it is never the headline.",
    ),
    epochs: int = typer.Option(30, "--epochs", min=1, help="Maximum epochs (fusion head)."),
    lr: float = typer.Option(1e-3, "--lr", min=0.0, help="Learning rate (fusion head)."),
    batch_size: int = typer.Option(
        64, "--batch-size", "-b", min=1, help="Training batch size (fusion head)."
    ),
    width: int = typer.Option(
        256,
        "--width",
        min=8,
        help="Fusion width (a multiple of the 4 attention heads; fusion head).",
    ),
    image_grid: int | None = typer.Option(
        None,
        "--image-grid",
        min=1,
        help="Average the image token grid to NxN regions before fusion (e.g. 2: 7x7 -> 2x2; much faster on a CPU).",
    ),
    cache_dir: CacheDirOpt = None,
    fold_models: bool = typer.Option(
        False,
        "--fold-models/--no-fold-models",
        help="Also save each fold's model (the picked method) under DIR/models/.",
    ),
    final_model: bool = typer.Option(
        True,
        "--final-model/--no-final-model",
        help="Train the picked method once more on all classes and save it as DIR/model for"
        " `skyfuse predict --classes`.",
    ),
) -> None:
    """Zero-shot classification of classes never seen in training, with mean ± std over folds.

    Classes are split into seen and unseen (seeded; unseen sets disjoint across folds when possible; fold files in DIR/folds/). The image side (pooled image vector) is mapped into the text encoder's sentence space, trained on seen classes to be near each image's own caption (LiT) and its class embedding; it is scored alone and in a weighted ensemble with the caption score, with calibrated stacking for the generalised setting. Epochs, temperature, loss mix, ensemble weight and calibration are all chosen on validation classes held out from the seen classes; the candidate with the best validation score is the headline. Unseen classes are scored by cosine similarity to their embeddings (prompt templates + descriptions, embedded by --text-encoder). The caption-only baseline (and CLIP with --clip) is scored on the same images.

    Writes DIR/metrics.json: metrics["method"] (the picked method), metrics["zsl"]["top1"]["mean"] / ["std"], likewise zsl.top5, gzsl.seen, gzsl.unseen, gzsl.h (the picked method, raw captions); metrics["baselines"]["caption_only"] in the same shape; metrics["settings"]["masked"] for masked captions. Also DIR/metrics.md (every method, the picked one marked) and DIR/model, the picked method trained on all classes for `skyfuse predict DIR/model IMAGES --classes "a,b"`.

    Example: skyfuse zeroshot data/aid --captions rsicd/ --unseen 0.25 --folds 3 --out runs/zs
    """
    from skyfuse.captioning import load_captions
    from skyfuse.captioning.provenance import source_of_file
    from skyfuse.data.folder import SceneFolder
    from skyfuse.errors import BadInputError
    from skyfuse.zeroshot.checks import check_fusion_settings, check_out_dir
    from skyfuse.zeroshot.classes import load_class_file, resolve_classes, save_class_file
    from skyfuse.zeroshot.protocol import ZeroShotSettings, run_zeroshot
    from skyfuse.zeroshot.task import HeadTrainConfig

    folder = SceneFolder(path)
    overrides, templates = load_class_file(descriptions) if descriptions else ([], [])
    if export_descriptions is not None:
        from skyfuse.zeroshot.classes import DEFAULT_TEMPLATES

        specs = resolve_classes(folder.classes, overrides)
        save_class_file(export_descriptions, specs, templates or DEFAULT_TEMPLATES)
        console.print(f"wrote {len(specs)} class descriptions to {export_descriptions}")
        return
    # cheap checks first: feature extraction takes minutes
    check_fusion_settings(model, {"width": width})
    check_out_dir(out)
    if captions is None:
        if folder.text_root is None:
            raise BadInputError(
                f"{path}: no captions given and no text/ folder; pass --captions FILE"
                " (e.g. the store written by `skyfuse caption`)"
            )
        captions = folder.text_root
    caps = load_captions(captions, folder.root)
    settings = ZeroShotSettings(
        model=model,
        unseen=unseen,
        folds=folds,
        seed=seed,
        captions=("raw", "masked") if mask is CaptionSetting.both else (mask.value,),
        fusion={"width": width},
        image_grid=image_grid,
        train=HeadTrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed),
        fusion_head=fusion_head,
        save_fold_models=fold_models,
        final_model=final_model,
    )
    if templates:
        settings.templates = templates
    run_zeroshot(
        folder.root,
        caps,
        out,
        settings,
        image_encoder=image_encoder,
        text_encoder=text_encoder,
        class_overrides=overrides,
        clip_encoder=clip,
        cache_dir=cache_dir,
        log=lambda msg: err_console.print(msg, highlight=False),
        show_progress=True,
        caption_source=source_of_file(captions).to_dict(),
    )
    console.print(f"metrics: {out / 'metrics.json'} and {out / 'metrics.md'}")


def register(app: typer.Typer) -> None:
    app.command("zeroshot")(zeroshot)
