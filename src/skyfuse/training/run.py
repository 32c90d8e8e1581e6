"""One training run from features to files: fit, test once, write metrics, report, plots and the bundle.

Inputs are prepared separately (`prepare.py`: folder, split, captions, features) so that `skyfuse bench`
extracts features once and calls `run_training` for every model and seed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from skyfuse.training.config import TrainConfig
from skyfuse.training.data import FeatureLike, TensorSet
from skyfuse.training.distributed import rank_zero_result
from skyfuse.training.fit import EpochHook, train_features

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
CURVES_FILE = "curves.png"


def run_training(
    features: FeatureLike,
    split: Any,
    *,
    model: str,
    cfg: TrainConfig,
    out_dir: Path | None,
    image_encoder: str,
    text_encoder: str,
    fusion: Mapping[str, Any] | None = None,
    prompt_id: str | None = None,
    caption_source: Mapping[str, Any] | None = None,
    encoder_names: tuple[str, str] | None = None,
    dataset: str = "",
    save_model: bool = True,
    plots: bool = True,
    resume: bool = True,
    on_epoch: EpochHook | None = None,
    captions_digest: str | None = None,
    force: bool = False,
    record: Mapping[str, Any] | None = None,
    skip_finished: bool = False,
) -> dict[str, Any]:
    """Train ``model`` on ``split.train`` (selection on ``split.val``), test once on ``split.test``.

    With ``out_dir`` it writes ``metrics.json``, ``report.md``, ``confusion.png/json``,
    ``curves.png`` and ``model/`` (a safetensors bundle), the per-epoch log under ``logs/``
    (``cfg.logger``: ``logs/metrics.csv`` by default), plus Lightning checkpoints under
    ``checkpoints/`` for resume. The folder's
    ``run.json`` fingerprint (`skyfuse.training.runfolder`; ``captions_digest`` is the captions' part)
    must match to resume; a different or finished run there is a `ConfigError` unless ``force``, which
    starts afresh; with ``skip_finished`` a finished run of the same fingerprint is read back instead
    (what `skyfuse bench` does). ``record`` adds keys to the result before it is written. Under DDP only rank 0
    evaluates and writes; every rank returns the same metrics dict (``test.oa``, ``test.aa``, ...).
    """
    from skyfuse.models import FusionConfig, create_model
    from skyfuse.training.attention_stats import attention_entropy
    from skyfuse.training.evaluate import evaluate_model
    from skyfuse.training.metrics import summary

    t0 = time.perf_counter()
    classes = list(split.classes)
    if cfg.selection == "fixed":  # every training image trains; built once, not concatenated
        train = TensorSet.from_features(features, [*split.train, *split.val], classes)
        val = None
    else:
        train = TensorSet.from_features(features, split.train, classes)
        val = TensorSet.from_features(features, split.val, classes) if split.val else None
    test = TensorSet.from_features(features, split.test, classes)
    fcfg = FusionConfig(
        model=model,
        image_dim=train.image_dim,
        text_dim=train.text_dim,
        num_classes=len(classes),
        **dict(fusion or {}),
    )
    if out_dir is not None:
        from skyfuse.errors import ConfigError
        from skyfuse.training.runfolder import open_run, run_fingerprint

        fingerprint = run_fingerprint(
            kind="features",
            model=fcfg.model,
            split=split,
            encoders=[image_encoder, text_encoder],
            train_config=cfg.model_dump(mode="json"),
            fusion=fcfg.to_dict(),
            captions=captions_digest,
        )
        if open_run(out_dir, fingerprint, force=force, split=split) == "done":
            if skip_finished:
                loaded: dict[str, Any] = json.loads(
                    (out_dir / METRICS_FILE).read_text(encoding="utf-8")
                )
                return loaded
            raise ConfigError(
                f"{out_dir}: holds a finished run (metrics.json); pass --force to retrain or choose another --out"
            )
    workdir = out_dir / "checkpoints" if (out_dir is not None and resume) else None
    outcome = train_features(
        lambda: create_model(fcfg),
        train,
        val,
        cfg,
        workdir=workdir,
        on_epoch=on_epoch,
        run_dir=out_dir,  # per-epoch log under out_dir/logs (cfg.logger)
    )
    result: dict[str, Any] = {
        "model": fcfg.model,
        "dataset": dataset,
        "protocol": getattr(split, "protocol", None),
        "seed": cfg.seed,
        "split": {
            "seed": getattr(split, "seed", None),
            "fingerprint": getattr(split, "fingerprint", None),
            "train": len(split.train),
            "val": len(split.val),
            "test": len(split.test),
        },
        "encoders": {
            "image": image_encoder,
            "text": text_encoder,
            "prompt_id": prompt_id,
            "image_name": encoder_names[0] if encoder_names else None,
            "text_name": encoder_names[1] if encoder_names else None,
        },
        "caption_source": dict(caption_source) if caption_source is not None else None,
        "fusion_config": fcfg.to_dict(),
        # the views the features really held (a FeatureSet extracted without views trains on one)
        "train_config": {**cfg.model_dump(mode="json"), "views": train.num_views},
        "training": outcome.summary(),
        **dict(record or {}),
    }

    def finish() -> dict[str, Any]:  # rank 0 only: the one look at test, then the files
        if val is not None and outcome.refit_epochs is None:
            result["val"] = summary(evaluate_model(outcome.model, val, classes))
        result["test"] = evaluate_model(outcome.model, test, classes)
        entropy = attention_entropy(outcome.model, test)
        if entropy:  # cross-attention models: how far from averaging, per direction
            result["test"]["attention_entropy"] = entropy
        result["seconds"] = round(time.perf_counter() - t0, 3)
        if out_dir is not None:
            write_run(
                out_dir, result, outcome.model, fcfg, classes, save_model=save_model, plots=plots
            )
        return result

    return rank_zero_result(finish)


def write_run(
    out_dir: Path,
    result: dict[str, Any],
    model: Any,
    fcfg: Any,
    classes: list[str],
    *,
    save_model: bool = True,
    plots: bool = True,
    extra: Mapping[str, Any] | None = None,
    add_files: Callable[[Path], None] | None = None,
) -> None:
    """Files of a finished run; the bundle first, metrics.json last (its presence means 'done')."""
    from skyfuse.reports.confusion import plot_confusion, save_confusion_json
    from skyfuse.reports.curves import plot_run_curves
    from skyfuse.reports.tables import write_atomic
    from skyfuse.training.bundle import save_bundle

    out_dir.mkdir(parents=True, exist_ok=True)
    enc = result["encoders"]
    if save_model:
        save_bundle(
            out_dir / "model",
            model,
            fcfg,
            class_names=classes,
            image_encoder=enc["image"],
            text_encoder=enc["text"],
            prompt_id=enc.get("prompt_id"),
            caption_source=result.get("caption_source"),
            extra={
                "protocol": result.get("protocol"),
                "seed": result.get("seed"),
                "dataset": result.get("dataset"),
                "test_oa": result["test"]["oa"],
                "train_config": result["train_config"],
                "image_encoder_name": enc.get("image_name"),
                "text_encoder_name": enc.get("text_name"),
                **dict(extra or {}),
            },
        )
        if add_files is not None:
            add_files(out_dir / "model")
    cm = result["test"]["confusion"]
    save_confusion_json(cm, classes, out_dir / "confusion.json")
    if plots:
        title = f"{result['model']} — test OA {100 * result['test']['oa']:.1f} %"
        plot_confusion(cm, classes, out_dir / "confusion.png", title=title)
        plot_run_curves(result, out_dir / CURVES_FILE)
    write_atomic(out_dir / REPORT_FILE, markdown_report(result))
    write_atomic(out_dir / METRICS_FILE, json.dumps(result, indent=1) + "\n")


def _training_line(result: Mapping[str, Any]) -> str:
    """How the weights were chosen, in words."""
    tr = result.get("training", {})
    cfg = result.get("train_config") or {}
    views = int(cfg.get("views", 1) or 1)
    aug = (
        f"; {views} dihedral views (one per sample in training, averaged at test)"
        if views > 1
        else ""
    )
    if cfg.get("selection") == "fixed":
        head = f"- training: train+val for a fixed {tr.get('epochs_run')} epochs (no val selection)"
    else:
        head = (
            f"- training: best val epoch {tr.get('best_epoch', -1) + 1} of {tr.get('epochs_run')} run"
            + (
                f"; refit on train+val for {tr['refit_epochs']} epochs"
                if tr.get("refit_epochs")
                else ""
            )
        )
    return head + aug + f"; {tr.get('seconds', 0):.1f} s"


def markdown_report(result: Mapping[str, Any]) -> str:
    """A short human summary of a run: headline numbers, protocol, training and per-class scores."""
    test = result["test"]
    lines = [
        f"# {result['model']} on {result.get('dataset') or 'dataset'}",
        "",
        f"- protocol: {result.get('protocol') or 'custom ratio'}, seed {result.get('seed')}; "
        f"images train/val/test = {result['split']['train']}/{result['split']['val']}/{result['split']['test']}",
        f"- encoders: image `{result['encoders']['image']}`, text `{result['encoders']['text']}`"
        + (
            f", prompt `{result['encoders']['prompt_id']}`"
            if result["encoders"].get("prompt_id")
            else ""
        ),
        f"- **test OA {100 * test['oa']:.2f} %, AA {100 * test['aa']:.2f} %, kappa {test['kappa']:.4f}** "
        f"({test['n']} images, evaluated once)",
        _training_line(result),
    ]
    if "val" in result:
        lines.append(f"- val OA {100 * result['val']['oa']:.2f} % (selection split)")
    if test.get("attention_entropy"):
        parts = ", ".join(f"{k} {v:.3f}" for k, v in test["attention_entropy"].items())
        lines.append(f"- cross-attention entropy / log(keys) on test: {parts} (1.0 = uniform)")
    lines += ["", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for name, pc in test["per_class"].items():
        lines.append(
            f"| {name} | {100 * pc['precision']:.1f} | {100 * pc['recall']:.1f} | {100 * pc['f1']:.1f} | {pc['support']} |"
        )
    return "\n".join(lines) + "\n"
