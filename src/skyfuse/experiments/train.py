"""Running a `TrainExperiment`: inputs resolved, features extracted (or fine-tuning), the run written.

The command line and the Python API both come here, so ``skyfuse train --config RUN/config.yaml``
and ``run_train(build_experiment(TrainExperiment, config_file=...))`` are the same run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from skyfuse.errors import ConfigError
from skyfuse.experiments.config import (
    CONFIG_FILE,
    BenchExperiment,
    Recorded,
    TrainExperiment,
    absolute_paths,
    recorded_differences,
    save_experiment,
    save_run_config,
)
from skyfuse.training.fit import EpochHook

Warn = Callable[[str], None]


def _ignore(message: str) -> None:
    return None


def check_model_names(names: list[str]) -> None:
    """A one-line error naming the registered models for a name that is none of them (any case)."""
    from skyfuse.models import list_models

    known = list_models()
    for name in names:
        if name.lower() not in known:
            raise ConfigError(f"--model {name}: unknown; use one of {', '.join(known)}")


def check_new_run(exp: TrainExperiment, *, force: bool) -> None:
    """One-line errors before minutes of feature extraction are spent."""
    from skyfuse.training.loop import check_logger

    check_model_names([exp.model.name])
    if exp.data.path is None:
        raise ConfigError("no scene folder: give PATH or set data.path in the config")
    if exp.out is None:
        raise ConfigError("no output folder: pass --out DIR or set out in the config")
    check_logger(exp.training.logger)
    if (exp.out / "metrics.json").is_file() and not force:
        raise ConfigError(
            f"{exp.out}: holds a finished run (metrics.json); pass --force to retrain or choose another --out"
        )


def extract_features(
    exp: TrainExperiment | BenchExperiment, folder: Any, texts: Any, *, show_progress: bool
) -> Any:
    """The cached token features (every view the recipe asks for) of the experiment's encoders."""
    from skyfuse.training import prepare

    return prepare.extract(
        folder,
        texts,
        image_encoder=exp.encoders.image,
        text_encoder=exp.encoders.text,
        cache_dir=exp.encoders.cache_dir,
        views=exp.training.views,
        show_progress=show_progress,
    )


def fusion_settings(exp: TrainExperiment) -> dict[str, Any]:
    """The model section as `FusionConfig` keyword arguments (the name is the model)."""
    return exp.model.model_dump(exclude={"name"})


def dropped_warning(dropped: list[str], skipped: dict[str, str]) -> str | None:
    """One line for images of the split that have no features (undecodable, no caption)."""
    if not dropped:
        return None
    why = skipped.get(dropped[0], "no features")
    return f"{len(dropped)} image(s) of the split left out, e.g. {dropped[0]}: {why}"


def write_first_config(exp: TrainExperiment, out: Path) -> None:
    """DIR/config.yaml before training, so a running or killed run says what it is; only into a
    folder without another run's files (a run to resume, or another run: `open_run` decides, and
    the end of the run rewrites it with its ``recorded`` section)."""
    from skyfuse.training.distributed import is_rank_zero

    if not is_rank_zero() or (out / "run.json").exists() or (out / CONFIG_FILE).exists():
        return
    out.mkdir(parents=True, exist_ok=True)
    save_experiment(exp.model_copy(update={"recorded": None}), out / CONFIG_FILE)


def run_train(
    exp: TrainExperiment,
    *,
    force: bool = False,
    on_epoch: EpochHook | None = None,
    warn: Warn = _ignore,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Train, test once, and write the run folder, ``config.yaml`` included; returns metrics.json's dict."""
    from skyfuse.training import prepare
    from skyfuse.training.distributed import is_rank_zero
    from skyfuse.training.runfolder import captions_digest, split_digest

    check_new_run(exp, force=force)
    exp = absolute_paths(exp)
    out, path = exp.out, exp.data.path
    assert out is not None and path is not None
    folder = prepare.open_folder(path)
    split = prepare.resolve_split(
        folder,
        split_file=exp.data.split,
        protocol=exp.data.protocol,
        train_ratio=exp.data.train_ratio,
        val=exp.data.val,
        seed=exp.seed,
    )
    caps = prepare.resolve_captions(folder, exp.data.captions)
    rels = [*split.part("train"), *split.part("val"), *split.test]
    seen = Recorded(
        captions_digest=captions_digest(caps.texts, rels),
        split_digest=split_digest(split),
        caption_source=caps.provenance,
    )
    for difference in recorded_differences(exp, seen):
        warn(f"this run differs from the config's recorded run: {difference}")
    if not force:
        write_first_config(exp, out)
    if exp.training.finetune:
        result = _finetune(exp, folder, split, caps, force=force, on_epoch=on_epoch)
    else:
        result = _frozen(
            exp,
            folder,
            split,
            caps,
            seen,
            force=force,
            on_epoch=on_epoch,
            warn=warn,
            show_progress=show_progress,
        )
    enc = result.get("encoders") or {}
    seen = seen.model_copy(
        update={"image_encoder_id": enc.get("image"), "text_encoder_id": enc.get("text")}
    )
    if is_rank_zero():
        save_run_config(exp, out, seen)
    return result


def _finetune(
    exp: TrainExperiment,
    folder: Any,
    split: Any,
    caps: Any,
    *,
    force: bool,
    on_epoch: EpochHook | None,
) -> dict[str, Any]:
    """The paper's end-to-end setting: the frozen-feature recipe (linear path) does not apply."""
    from skyfuse.training.finetune import run_finetune

    assert exp.out is not None
    return run_finetune(
        folder,
        split,
        caps.texts,
        model=exp.model.name,
        cfg=exp.training,
        fusion={**fusion_settings(exp), "linear_path": False},
        out_dir=exp.out,
        image_encoder=exp.encoders.image,
        text_encoder=exp.encoders.text,
        prompt_id=caps.prompt_id,
        caption_source=caps.provenance,
        cache_dir=exp.encoders.cache_dir,
        force=force,
        on_epoch=on_epoch,
    )


def _frozen(
    exp: TrainExperiment,
    folder: Any,
    split: Any,
    caps: Any,
    seen: Recorded,
    *,
    force: bool,
    on_epoch: EpochHook | None,
    warn: Warn,
    show_progress: bool,
) -> dict[str, Any]:
    from skyfuse.training import prepare
    from skyfuse.training.run import run_training

    features = extract_features(exp, folder, caps.texts, show_progress=show_progress)
    split, dropped = prepare.restrict_split(split, set(features.rels))
    line = dropped_warning(dropped, features.skipped)
    if line:
        warn(line)
    record: dict[str, Any] = {"dropped": dropped} if dropped else {}
    if exp.data.captions is not None:  # lets `skyfuse evaluate RUN` find the same captions again
        record["captions"] = str(Path(exp.data.captions).resolve())
    return run_training(
        features,
        split,
        model=exp.model.name,
        cfg=exp.training,
        fusion=fusion_settings(exp),
        out_dir=exp.out,
        image_encoder=features.image_encoder_id,
        text_encoder=features.text_encoder_id,
        prompt_id=caps.prompt_id,
        caption_source=caps.provenance,
        encoder_names=(exp.encoders.image, exp.encoders.text),
        dataset=str(folder.root),
        on_epoch=on_epoch,
        captions_digest=seen.captions_digest,
        force=force,
        record=record,
    )
