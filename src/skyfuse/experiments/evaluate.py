"""Scoring a trained bundle on a folder (`skyfuse evaluate`): the same captions, encoders and views
the run was trained with, and a one-line error for anything that would make the numbers wrong."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from skyfuse.errors import ConfigError

PARTS = ("test", "val", "train", "trainval", "all")


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


def trained_views(bundle: Any) -> int:
    """The dihedral views a bundle was trained and tested with (1 for bundles older than views)."""
    views = (bundle.extra.get("train_config") or {}).get("views", 1)
    return int(views) if views in (1, 2, 4, 8) else 1


def _rels(folder: Any, bundle: Any, split_file: Path | None, part: str) -> list[str]:
    from skyfuse.data.splits import Split

    if part == "all":
        return [s.rel for s in folder.samples]
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
    return list(split.part(part))


def _features(bundle: Any, model_dir: Path, folder: Any, texts: Any, cache_dir: Path | None) -> Any:
    from skyfuse.training import prepare

    image_name = bundle.extra.get("image_encoder_name") or bundle.image_encoder.rsplit("@", 1)[0]
    text_name = bundle.extra.get("text_encoder_name") or bundle.text_encoder.rsplit("@", 1)[0]
    encoders = None
    if bundle.extra.get("finetuned_encoders"):
        from skyfuse.training.finetune import load_finetuned_encoders

        encoders = load_finetuned_encoders(model_dir, image_name, text_name)
    features = prepare.extract(
        folder,
        texts,
        image_encoder=image_name,
        text_encoder=text_name,
        cache_dir=cache_dir,
        encoders=encoders,
        views=1 if encoders is not None else trained_views(bundle),
    )
    if encoders is None and (features.image_encoder_id, features.text_encoder_id) != (
        bundle.image_encoder,
        bundle.text_encoder,
    ):
        raise ConfigError(
            f"{model_dir}: trained on features of {bundle.image_encoder} / {bundle.text_encoder} but the encoders"
            f" now give {features.image_encoder_id} / {features.text_encoder_id}; use the same encoder weights"
        )
    return features


def evaluate_bundle(
    model_dir: Path,
    path: Path,
    *,
    split_file: Path | None = None,
    part: str = "test",
    captions: Path | None = None,
    cache_dir: Path | None = None,
    out: Path | None = None,
    warn: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """OA, AA, kappa, per-class scores and confusion of a bundle on ``part`` of ``path``'s split
    (default: the run's own split.json and captions); with ``out`` also metrics.json, report.md and
    confusion.png/json."""
    from skyfuse.experiments.train import dropped_warning
    from skyfuse.inference.loading import resolve_model_dir
    from skyfuse.training import prepare
    from skyfuse.training.bundle import load_bundle
    from skyfuse.training.data import TensorSet
    from skyfuse.training.evaluate import evaluate_model

    if part not in PARTS:
        raise ConfigError(f"--part {part}: use test, val, train, trainval or all")
    model_dir = resolve_model_dir(model_dir)  # a run folder (holding model/) or model/ itself
    run_dir = model_dir.parent
    if captions is None:
        captions = _recorded_captions(run_dir)
    if split_file is None and (run_dir / "split.json").is_file():
        split_file = run_dir / "split.json"
    bundle = load_bundle(model_dir)
    folder = prepare.open_folder(path, classes=bundle.class_names)
    rels = _rels(folder, bundle, split_file, part)
    caps = prepare.resolve_captions(folder, captions)
    features = _features(bundle, model_dir, folder, caps.texts, cache_dir)
    have = set(features.rels)
    dropped = [r for r in rels if r not in have]
    line = dropped_warning(dropped, features.skipped)
    if line:
        warn(line)
    if not len(dropped) < len(rels):
        raise ConfigError(
            f"{path}: none of the {len(rels)} image(s) of --part {part} has a caption or features; pass the --captions the model was trained with"
        )
    if 2 * len(dropped) > len(rels):
        warn(
            f"{len(dropped)} of {len(rels)} image(s) of --part {part} were skipped"
            f" (no caption or features); the scores below cover only {len(rels) - len(dropped)}"
        )
    data = TensorSet.from_features(features, [r for r in rels if r in have], bundle.class_names)
    metrics = evaluate_model(bundle.model, data, bundle.class_names)
    if out is not None:
        _write(out, bundle, folder, part, metrics, len(data), dropped)
    return metrics


def _write(
    out: Path, bundle: Any, folder: Any, part: str, metrics: Any, n: int, dropped: list[str]
) -> None:
    from skyfuse.reports.confusion import plot_confusion, save_confusion_json
    from skyfuse.reports.tables import write_atomic
    from skyfuse.training.run import markdown_report

    result = {
        "model": bundle.config.model,
        "dataset": str(folder.root),
        "protocol": None,
        "seed": None,
        "split": {"train": 0, "val": 0, "test": n},
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
