"""Running a `ZeroShotExperiment`: the unseen-class protocol from one checked config."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from skyfuse.errors import BadInputError, ConfigError
from skyfuse.experiments.config import (
    Recorded,
    ZeroShotExperiment,
    absolute_paths,
    save_run_config,
)

Log = Callable[[str], None]


def export_descriptions(path: Path | None, descriptions: Path | None, target: Path) -> int:
    """Write the class descriptions skyfuse would use for ``path``'s classes; returns how many."""
    if path is None:
        raise ConfigError("no scene folder: give PATH (its classes are described) or set data.path")
    from skyfuse.data.folder import SceneFolder
    from skyfuse.zeroshot.classes import (
        DEFAULT_TEMPLATES,
        load_class_file,
        resolve_classes,
        save_class_file,
    )

    overrides, templates = load_class_file(descriptions) if descriptions else ([], [])
    specs = resolve_classes(SceneFolder(path).classes, overrides)
    save_class_file(target, specs, templates or DEFAULT_TEMPLATES)
    return len(specs)


def run_zeroshot_experiment(
    exp: ZeroShotExperiment, *, log: Log | None = None, show_progress: bool = True
) -> dict[str, Any]:
    """The protocol's metrics (also DIR/metrics.json, metrics.md, folds/, model/ and config.yaml)."""
    from skyfuse.captioning import load_captions
    from skyfuse.captioning.provenance import source_of_file
    from skyfuse.data.folder import SceneFolder
    from skyfuse.training.runfolder import captions_digest
    from skyfuse.zeroshot.checks import check_fusion_settings, check_out_dir
    from skyfuse.zeroshot.classes import load_class_file
    from skyfuse.zeroshot.protocol import ZeroShotSettings, run_zeroshot
    from skyfuse.zeroshot.task import HeadTrainConfig

    if exp.data.path is None:
        raise ConfigError("no scene folder: give PATH or set data.path in the config")
    if exp.out is None:
        raise ConfigError("no output folder: pass --out DIR or set out in the config")
    exp = absolute_paths(exp)
    assert exp.data.path is not None and exp.out is not None
    folder = SceneFolder(exp.data.path)
    overrides, templates = (
        load_class_file(exp.data.descriptions) if exp.data.descriptions else ([], [])
    )
    # cheap checks first: feature extraction takes minutes
    check_fusion_settings(exp.model.name, {"width": exp.model.width})
    check_out_dir(exp.out)
    captions = exp.data.captions
    if captions is None:
        if folder.text_root is None:
            raise BadInputError(
                f"{exp.data.path}: no captions given and no text/ folder; pass --captions FILE"
                " (e.g. the store written by `skyfuse caption`)"
            )
        captions = folder.text_root
    caps = load_captions(captions, folder.root)
    mask = exp.protocol.mask
    settings = ZeroShotSettings(
        model=exp.model.name,
        unseen=exp.protocol.unseen,
        folds=exp.protocol.folds,
        seed=exp.seed,
        captions=("raw", "masked") if mask == "both" else (mask,),
        fusion={"width": exp.model.width},
        image_grid=exp.model.image_grid,
        train=HeadTrainConfig(**exp.training.model_dump(), seed=exp.seed),
        align=exp.align,
        fusion_head=exp.model.fusion_head,
        save_fold_models=exp.outputs.fold_models,
        final_model=exp.outputs.final_model,
    )
    if templates:
        settings.templates = templates
    source = source_of_file(captions).to_dict()
    metrics = run_zeroshot(
        folder.root,
        caps,
        exp.out,
        settings,
        image_encoder=exp.encoders.image,
        text_encoder=exp.encoders.text,
        class_overrides=overrides,
        clip_encoder=exp.encoders.clip,
        cache_dir=exp.encoders.cache_dir,
        log=log,
        show_progress=show_progress,
        caption_source=source,
    )
    seen = Recorded(captions_digest=captions_digest(caps, caps.keys()), caption_source=source)
    save_run_config(exp, exp.out, seen)
    return metrics
