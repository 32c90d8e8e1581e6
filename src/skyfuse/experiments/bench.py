"""Running a `BenchExperiment`: features once, every model on every seed's split, the tables written."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from skyfuse.errors import ConfigError
from skyfuse.experiments.config import (
    BenchExperiment,
    Recorded,
    absolute_paths,
    save_run_config,
)

RunHook = Callable[[dict[str, Any]], None]


def check_bench(exp: BenchExperiment) -> None:
    """One-line errors before minutes of feature extraction are spent."""
    from skyfuse.experiments.train import check_model_names
    from skyfuse.training.loop import check_logger

    check_logger(exp.training.logger)
    check_model_names(exp.models)
    if exp.data.path is None:
        raise ConfigError("no scene folder: give PATH or set data.path in the config")
    if exp.data.protocol is None and exp.data.train_ratio is None:
        raise ConfigError("pass --protocol NAME (e.g. whu-60) or --train RATIO")


def run_bench_experiment(
    exp: BenchExperiment,
    *,
    force: bool = False,
    on_run: RunHook | None = None,
    warn: Callable[[str], None] = lambda message: None,
    show_progress: bool = True,
) -> list[dict[str, Any]]:
    """The bench table (mean ± std per model, percent); with ``exp.out`` also its files and config.yaml."""
    from skyfuse.experiments.train import extract_features
    from skyfuse.training import prepare
    from skyfuse.training.bench import run_bench
    from skyfuse.training.runfolder import captions_digest

    check_bench(exp)
    exp = absolute_paths(exp)
    assert exp.data.path is not None
    folder = prepare.open_folder(exp.data.path)
    caps = prepare.resolve_captions(folder, exp.data.captions)
    features = extract_features(exp, folder, caps.texts, show_progress=show_progress)
    if features.skipped:
        warn(f"{len(features.skipped)} image(s) without features are left out")
    digest = captions_digest(caps.texts, features.rels)
    table, _ = run_bench(
        features,
        folder,
        models=[m.lower() for m in exp.models],
        seeds=exp.seeds,
        protocol=exp.data.protocol,
        train_ratio=exp.data.train_ratio,
        val=exp.data.val,
        cfg=exp.training,
        fusion=exp.fusion.model_dump(),
        probes=exp.probes,
        out_dir=exp.out,
        image_encoder=features.image_encoder_id,
        text_encoder=features.text_encoder_id,
        prompt_id=caps.prompt_id,
        caption_source=caps.provenance,
        encoder_names=(exp.encoders.image, exp.encoders.text),
        dataset=str(folder.root),
        save_models=exp.save_models,
        on_run=on_run,
        captions_digest=digest,
        force=force,
    )
    if exp.out is not None:
        seen = Recorded(
            captions_digest=digest,
            image_encoder_id=features.image_encoder_id,
            text_encoder_id=features.text_encoder_id,
            caption_source=caps.provenance,
        )
        save_run_config(exp, exp.out, seen)
    return table
