"""Fitting a fusion model on in-memory features: selection on val, optional refit, resume after a kill.

Protocol (why): the test split is never touched here. Early stopping and the choice of weights use val
only. With ``refit`` (the torchgeo-bench way) val only chooses the epoch count; a fresh model is then
trained on train + val for exactly that many epochs on the same schedule, which helps when val is tiny
(3 images per class at AID 50/50 on 40 per class). With a ``workdir`` every epoch leaves a Lightning
``last.ckpt`` (plain tensors and numbers only, loaded with ``weights_only=True``); a rerun resumes from
it, and a finished phase leaves a JSON marker (plus safetensors weights) so it is not repeated.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from torch import nn

from skyfuse.errors import ConfigError
from skyfuse.training.config import TrainConfig
from skyfuse.training.data import FeatureDataModule, TensorSet
from skyfuse.training.distributed import is_rank_zero, steps_per_process, trainer_devices
from skyfuse.training.module import FusionTask

EpochHook = Callable[[dict[str, float]], None]


def quiet_lightning() -> None:
    """Silence Lightning's banners (GPU available, model summary, tips) and known-harmless warnings."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in (
        ".*does not have many workers.*",
        ".*number of training batches.*smaller than the logging interval.*",
        ".*that has no `__len__`.*",
        ".*LightningModule.*trainer.*not attached.*",
        ".*Checkpoint directory .* exists and is not empty.*",
        ".*Total length of .* across ranks is zero.*",
        ".*`training_step` returned `None`.*",
        ".*LeafSpec.*is deprecated.*",
        # DDP: val metrics are summed over ranks by FusionTask itself; train_loss is rank 0's share
        ".*recommended to use `self.log\\(.*sync_dist=True.*",
        ".*all_gather is deprecated.*",
    ):
        warnings.filterwarnings("ignore", message=pattern)


class BestWeights(Callback):
    """Keeps a copy of the weights at the best val epoch; its state rides in Lightning checkpoints."""

    def __init__(self, monitor: str, mode: str) -> None:
        self.monitor = monitor
        self.mode = mode
        self.best_score: float | None = None
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] | None = None

    def _better(self, value: float) -> bool:
        if self.best_score is None:
            return True
        return value < self.best_score if self.mode == "min" else value > self.best_score

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        if self._better(value):
            self.best_score = value
            self.best_epoch = int(trainer.current_epoch)
            model = pl_module.model if isinstance(pl_module, FusionTask) else pl_module
            self.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

    def state_dict(self) -> dict[str, Any]:
        return {
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "best_state": self.best_state,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_score = state_dict.get("best_score")
        self.best_epoch = int(state_dict.get("best_epoch", -1))
        self.best_state = state_dict.get("best_state")


class History(Callback):
    """Per-epoch losses and val accuracy (also in checkpoints, so a resumed run keeps its curve)."""

    def __init__(self, hook: EpochHook | None = None) -> None:
        self.rows: list[dict[str, float]] = []
        self.hook = hook
        self._t0 = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # runs after validation in Lightning 2.x, so val metrics of this epoch are present
        row: dict[str, float] = {
            "epoch": float(trainer.current_epoch),
            "seconds": time.perf_counter() - self._t0,
        }
        for key in ("train_loss", "val_loss", "val_acc"):
            if key in trainer.callback_metrics:
                row[key] = float(trainer.callback_metrics[key])
        self.rows.append(row)
        if self.hook is not None and trainer.is_global_zero:
            self.hook(row)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict.get("rows", []))


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


class TrainingInterrupted(Exception):
    """Ctrl-C stopped ``trainer.fit``; the checkpoints stay, so rerunning the same command resumes."""


def make_trainer(cfg: TrainConfig, **kwargs: Any) -> L.Trainer:
    """A Lightning Trainer, or a one-line `ConfigError` for an accelerator/devices/strategy/precision
    this machine cannot run (Lightning raises a MisconfigurationException with a traceback)."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        return L.Trainer(**kwargs)
    except (MisconfigurationException, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"--accelerator {cfg.accelerator} --devices {cfg.devices}: {first.rstrip('.!')};"
            " use --accelerator cpu (or auto) and --devices auto"
        ) from None


def fit_or_interrupt(trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
    """``trainer.fit`` that turns Ctrl-C into `TrainingInterrupted`.

    Why: on KeyboardInterrupt Lightning tears down, ignores SIGINT from then on and calls
    ``sys.exit(1)`` without a word; callers want a clear line and exit status 130 instead.
    """
    previous = signal.getsignal(signal.SIGINT)
    try:
        trainer.fit(*args, **kwargs)
    except SystemExit:
        if trainer.interrupted:
            raise TrainingInterrupted from None
        raise
    finally:
        # not the main thread (ValueError), or a handler set outside Python (TypeError)
        with contextlib.suppress(ValueError, TypeError):
            signal.signal(signal.SIGINT, previous)
    if trainer.interrupted:
        raise TrainingInterrupted


def _trainer(
    cfg: TrainConfig,
    max_epochs: int,
    callbacks: list[Callback],
    workdir: Path | None,
    has_val: bool,
) -> L.Trainer:
    kwargs: dict[str, Any] = {}
    if cfg.precision:
        kwargs["precision"] = cfg.precision
    return make_trainer(
        cfg,
        max_epochs=max_epochs,
        accelerator=cfg.accelerator,
        devices=trainer_devices(cfg),
        strategy=cfg.strategy,
        num_nodes=cfg.num_nodes,
        gradient_clip_val=cfg.grad_clip,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=workdir is not None,
        enable_model_summary=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        limit_val_batches=None if has_val else 0,
        default_root_dir=str(workdir) if workdir is not None else None,
        log_every_n_steps=1,
        **kwargs,
    )


def fit_phase(
    model: nn.Module,
    train: TensorSet,
    val: TensorSet | None,
    cfg: TrainConfig,
    *,
    max_epochs: int | None = None,
    workdir: Path | None = None,
    on_epoch: EpochHook | None = None,
) -> FitResult:
    """Train ``model`` (in place) and return it with its best-on-val weights (or last, without val).

    ``max_epochs`` may be smaller than ``cfg.epochs`` (a refit): the schedule still spans
    ``cfg.epochs``, so the refit follows the selection run's learning-rate trajectory.
    """
    quiet_lightning()
    epochs = max_epochs or cfg.epochs
    has_val = val is not None and len(val) > 0
    dm = FeatureDataModule(
        train, val if has_val else None, batch_size=cfg.batch_size, seed=cfg.seed
    )
    best = BestWeights(cfg.monitor, "min" if cfg.monitor == "val_loss" else "max")
    history = History(on_epoch)
    callbacks: list[Callback] = [best, history]
    if has_val:
        callbacks.append(
            EarlyStopping(
                monitor=cfg.monitor,
                mode=best.mode,
                patience=cfg.patience,
                check_on_train_epoch_end=False,
            )
        )
    ckpt_path: str | None = None
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        callbacks.append(  # one rolling file, rewritten every epoch: what a rerun resumes from
            ModelCheckpoint(
                dirpath=str(workdir),
                filename="last",
                monitor=None,
                save_top_k=1,
                every_n_epochs=1,
                enable_version_counter=False,
            )
        )
        last = workdir / "last.ckpt"
        ckpt_path = str(last) if last.is_file() else None
    trainer = _trainer(cfg, epochs, callbacks, workdir, has_val)
    # the schedule counts the steps of one process: under DDP each rank sees 1/world of the batches
    steps = steps_per_process(len(train), cfg.batch_size, trainer.world_size)
    task = FusionTask(model, cfg, steps_per_epoch=steps)
    t0 = time.perf_counter()
    fit_or_interrupt(trainer, task, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
    seconds = time.perf_counter() - t0
    schedule = schedule_record(trainer, steps)
    epochs_run = len(history.rows) or int(trainer.current_epoch)
    if has_val and best.best_state is not None:
        model.load_state_dict(best.best_state)
        best_epoch = best.best_epoch
    else:
        best_epoch = epochs_run - 1
    model.eval()
    return FitResult(
        model, best_epoch, epochs_run, history.rows, best.best_score, seconds, schedule
    )


def schedule_record(trainer: L.Trainer, steps_per_epoch: int) -> dict[str, Any]:
    """How the learning-rate schedule ran: steps per epoch and optimizer steps of one process,
    the number of processes and the last learning rate of the first parameter group."""
    lr = None
    if trainer.optimizers and trainer.optimizers[0].param_groups:
        lr = float(trainer.optimizers[0].param_groups[0]["lr"])
    return {
        "steps_per_epoch": int(steps_per_epoch),
        "optimizer_steps": int(trainer.global_step),
        "world_size": int(trainer.world_size),
        "last_lr": lr,
    }


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
) -> TrainOutcome:
    """Select on val (early stopping), then either keep the best weights or refit on train + val.

    ``build_model`` is called after seeding, so the same seed gives the same initial weights.
    """
    from safetensors.torch import load_model, save_model

    from skyfuse.reports.tables import write_atomic

    t0 = time.perf_counter()
    if cfg.selection == "fixed":
        return _train_fixed(build_model, train, val, cfg, workdir=workdir, on_epoch=on_epoch)
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
        sel = fit_phase(model, train, val, cfg, workdir=select_dir, on_epoch=on_epoch)
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
