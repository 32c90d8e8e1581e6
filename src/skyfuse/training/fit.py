"""Fitting a fusion model on in-memory features: selection on val, optional refit, resume after a kill.

Protocol (why): the test split is never touched here. Early stopping and the choice of weights use val
only. With ``refit`` (the torchgeo-bench way) val only chooses the epoch count; a fresh model is then
trained on train + val for exactly that many epochs on the same schedule, which helps when val is tiny
(3 images per class at AID 50/50 on 40 per class). With a ``workdir`` every epoch leaves a Lightning
``last.ckpt`` (plain tensors and numbers only, loaded with ``weights_only=True``); a rerun resumes from
it, and a finished phase leaves a JSON marker (plus safetensors weights) so it is not repeated.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
from torch import nn

from skyfuse.training.config import TrainConfig
from skyfuse.training.data import FeatureDataModule, TensorSet
from skyfuse.training.distributed import is_rank_zero, steps_per_process
from skyfuse.training.loop import (  # re-exported: the CLI and older callers import them from here
    BestWeights,
    EpochHook,
    History,
    LoopSettings,
    TrainingInterrupted,
    build_loop,
    fit_or_interrupt,
    make_trainer,
    quiet_lightning,
    schedule_record,
)
from skyfuse.training.module import FusionTask

__all__ = [
    "BestWeights",
    "EpochHook",
    "FitResult",
    "History",
    "TrainOutcome",
    "TrainingInterrupted",
    "fit_or_interrupt",
    "fit_phase",
    "make_trainer",
    "quiet_lightning",
    "schedule_record",
    "train_features",
]


@dataclass
class FitResult:
    """One fitted phase: final weights loaded into ``model``."""

    model: nn.Module
    best_epoch: int
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list)
    best_score: float | None = None
    seconds: float = 0.0
    schedule: dict[str, Any] = field(default_factory=dict)


def fit_phase(
    model: nn.Module,
    train: TensorSet,
    val: TensorSet | None,
    cfg: TrainConfig,
    *,
    max_epochs: int | None = None,
    workdir: Path | None = None,
    on_epoch: EpochHook | None = None,
    run_dir: Path | None = None,
    log_version: str = "",
) -> FitResult:
    """Train ``model`` (in place) and return it with its best-on-val weights (or last, without val).

    ``max_epochs`` may be smaller than ``cfg.epochs`` (a refit): the schedule still spans
    ``cfg.epochs``, so the refit follows the selection run's learning-rate trajectory.
    ``workdir`` holds the phase's ``last.ckpt``; ``run_dir`` receives its per-epoch log
    (``cfg.logger``) under ``logs/`` (``log_version``: a sub-folder, e.g. ``refit``).
    """
    has_val = val is not None and len(val) > 0
    dm = FeatureDataModule(
        train, val if has_val else None, batch_size=cfg.batch_size, seed=cfg.seed
    )
    loop = build_loop(
        LoopSettings.from_train_config(cfg),
        max_epochs=max_epochs or cfg.epochs,
        has_val=has_val,
        checkpoint_dir=workdir,
        run_dir=run_dir,
        log_version=log_version,
        hparams=cfg.model_dump(mode="json"),
        on_epoch=on_epoch,
        log_every_n_steps=1,
    )
    trainer = loop.trainer
    # the schedule counts the steps of one process: under DDP each rank sees 1/world of the batches
    steps = steps_per_process(len(train), cfg.batch_size, trainer.world_size)
    task = FusionTask(model, cfg, steps_per_epoch=steps)
    t0 = time.perf_counter()
    loop.fit(task, datamodule=dm)
    seconds = time.perf_counter() - t0
    best_epoch = loop.keep_best(model)
    model.eval()
    return FitResult(
        model,
        best_epoch,
        loop.epochs_run,
        loop.history.rows,
        loop.best.best_score if loop.best is not None else None,
        seconds,
        schedule_record(trainer, steps),
    )


@dataclass
class TrainOutcome:
    """What `train_features` produced: the final model and how it was chosen."""

    model: nn.Module
    best_epoch: int
    epochs_run: int
    refit_epochs: int | None
    history: list[dict[str, float]]
    refit_history: list[dict[str, float]] | None
    best_val: float | None
    seconds: float
    schedule: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "schedule": self.schedule,
            "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run,
            "refit_epochs": self.refit_epochs,
            "best_val": self.best_val,
            "seconds": round(self.seconds, 3),
            "history": self.history,
            "refit_history": self.refit_history,
        }


def _train_fixed(
    build_model: Callable[[], nn.Module],
    train: TensorSet,
    val: TensorSet | None,
    cfg: TrainConfig,
    *,
    workdir: Path | None,
    on_epoch: EpochHook | None,
    run_dir: Path | None = None,
) -> TrainOutcome:
    """Every training image (train + val) for exactly ``cfg.epochs`` epochs: no choice rests on val.

    Why: at 20-50 images per class the val split holds 2-5 per class, and an epoch chosen on it is
    mostly noise; a schedule that decays to its end over a fixed horizon needs no choice at run time
    (its length was chosen once by cross-validation on training data, docs/training.md).
    """
    t0 = time.perf_counter()
    data = TensorSet.concat([train, val]) if val is not None and len(val) > 0 else train
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    fixed = fit_phase(
        build_model(),
        data,
        None,
        cfg,
        workdir=workdir / "fixed" if workdir is not None else None,
        on_epoch=on_epoch,
        run_dir=run_dir,
    )
    return TrainOutcome(
        fixed.model,
        fixed.epochs_run - 1,
        fixed.epochs_run,
        fixed.epochs_run,
        [],
        fixed.history,
        None,
        time.perf_counter() - t0,
        fixed.schedule,
    )


def train_features(
    build_model: Callable[[], nn.Module],
    train: TensorSet,
    val: TensorSet | None,
    cfg: TrainConfig,
    *,
    workdir: Path | None = None,
    on_epoch: EpochHook | None = None,
    run_dir: Path | None = None,
) -> TrainOutcome:
    """Select on val (early stopping), then either keep the best weights or refit on train + val.

    ``build_model`` is called after seeding, so the same seed gives the same initial weights.
    With ``run_dir``, the per-epoch log (``cfg.logger``) of the fixed or selection phase goes to
    ``run_dir/logs/`` and a refit's to ``run_dir/logs/refit/``.
    """
    from safetensors.torch import load_model, save_model

    from skyfuse.reports.tables import write_atomic

    t0 = time.perf_counter()
    if cfg.selection == "fixed":
        return _train_fixed(
            build_model, train, val, cfg, workdir=workdir, on_epoch=on_epoch, run_dir=run_dir
        )
    select_dir = workdir / "select" if workdir is not None else None
    marker = select_dir / "done.json" if select_dir is not None else None
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model = build_model()
    if marker is not None and marker.is_file():
        done = json.loads(marker.read_text(encoding="utf-8"))
        load_model(model, str(marker.with_name("best.safetensors")))
        model.eval()
        sel = FitResult(
            model,
            int(done["best_epoch"]),
            int(done["epochs_run"]),
            done["history"],
            done["best_score"],
        )
    else:
        sel = fit_phase(
            model, train, val, cfg, workdir=select_dir, on_epoch=on_epoch, run_dir=run_dir
        )
        if marker is not None and is_rank_zero():  # one writer; the weights first, the marker last
            best_file = marker.with_name("best.safetensors")
            save_model(sel.model, str(best_file) + ".tmp")
            os.replace(str(best_file) + ".tmp", best_file)
            done = {
                "best_epoch": sel.best_epoch,
                "epochs_run": sel.epochs_run,
                "history": sel.history,
                "best_score": sel.best_score,
            }
            write_atomic(marker, json.dumps(done))
    has_val = val is not None and len(val) > 0
    if not (cfg.refit and has_val):
        return TrainOutcome(
            sel.model,
            sel.best_epoch,
            sel.epochs_run,
            None,
            sel.history,
            None,
            sel.best_score,
            time.perf_counter() - t0,
            sel.schedule,
        )
    assert val is not None
    n = sel.best_epoch + 1
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    fresh = build_model()
    refit = fit_phase(
        fresh,
        TensorSet.concat([train, val]),
        None,
        cfg,
        max_epochs=n,
        workdir=workdir / "refit" if workdir is not None else None,
        on_epoch=on_epoch,
        run_dir=run_dir,
        log_version="refit",
    )
    return TrainOutcome(
        refit.model,
        sel.best_epoch,
        sel.epochs_run,
        n,
        sel.history,
        refit.history,
        sel.best_score,
        time.perf_counter() - t0,
        refit.schedule,
    )
