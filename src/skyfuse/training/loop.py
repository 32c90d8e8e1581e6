"""The one training loop: every Lightning Trainer of skyfuse is built here.

Why one place: frozen-feature training (`skyfuse.training.fit`), end-to-end fine-tuning
(`skyfuse.training.finetune`) and the zero-shot semantic head (`skyfuse.zeroshot.task`) each used
to build their own Trainer, selection callbacks and banner silencing, and drifted apart (one had no
one-line error for a missing GPU, one no resume, one no epoch times). `build_loop` now decides for all
of them:

- where it runs: accelerator / devices / strategy / num_nodes / precision, with a one-line
  `ConfigError` when this machine cannot run them (`make_trainer`);
- what is logged: one row per epoch (train loss and accuracy, val loss and accuracy when there is a
  val split, learning rate, epoch seconds) to Lightning's CSV, TensorBoard, MLflow or W&B logger
  (`make_logger`), written by `History` itself rather than by ``self.log``, so every logger gets
  exactly one row per epoch whatever the steps, and a resumed run rewrites the rows its checkpoint
  holds (none lost, none duplicated);
- how a kill is survived: one rolling ``last.ckpt`` rewritten every epoch, resumed from when present;
- how weights are chosen: with a val split, early stopping plus the best-val weights (`BestWeights`);
  without one (the fixed schedule, a refit) the last epoch's weights.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import signal
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger
from torch import nn

from skyfuse.errors import ConfigError

EpochHook = Callable[[dict[str, float]], None]
LoggerKind = Literal["csv", "tensorboard", "mlflow", "wandb", "none"]
LOGS_DIR = "logs"
METRICS_CSV = "metrics.csv"
#: the package each optional logger needs (Lightning imports it lazily and fails with a traceback)
LOGGER_PACKAGES = {
    "tensorboard": ("tensorboard", "tensorboardX"),
    "mlflow": ("mlflow",),
    "wandb": ("wandb",),
}


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
        ".*Experiment logs directory .* exists and is not empty.*",  # a resume rewrites its rows
        ".*Total length of .* across ranks is zero.*",
        ".*`training_step` returned `None`.*",
        ".*LeafSpec.*is deprecated.*",
        # DDP: val metrics are summed over ranks by FusionTask itself; train_loss is rank 0's share
        ".*recommended to use `self.log\\(.*sync_dist=True.*",
        ".*all_gather is deprecated.*",
    ):
        warnings.filterwarnings("ignore", message=pattern)


def selected_module(pl_module: L.LightningModule) -> nn.Module:
    """The network whose weights a task trains and a caller keeps (``model`` of `FusionTask`,
    ``head`` of the zero-shot task), not the task with its buffers and optimiser state."""
    for name in ("model", "head"):
        inner = getattr(pl_module, name, None)
        if isinstance(inner, nn.Module):
            return inner
    return pl_module


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
            model = selected_module(pl_module)
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


#: per-epoch values History reads from what the task logged (absent ones are left out of the row)
ROW_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc")


class History(Callback):
    """One row per epoch: epoch, seconds, train/val loss and accuracy, learning rate.

    The rows ride in checkpoints (a resumed run keeps its curve) and go to the trainer's loggers, one
    ``log_metrics`` call per epoch with ``step`` = the epoch. On a resume the CSV file is rewritten
    from the checkpoint's rows first: the epoch that was running when the process died (whose row may
    or may not have reached the file) is trained again and logged once. TensorBoard / MLflow / W&B
    keep what they already received (they cannot take rows back): there, an epoch logged but not
    yet checkpointed when the process died appears twice, at the same step.
    """

    def __init__(self, hook: EpochHook | None = None) -> None:
        self.rows: list[dict[str, float]] = []
        self.hook = hook
        self._t0 = time.perf_counter()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            if isinstance(logger, CSVLogger):
                path = Path(logger.experiment.metrics_file_path)
                logger.experiment.metrics = []
                path.unlink(missing_ok=True)
                for row in self.rows:
                    logger.log_metrics(dict[str, Any](row), step=int(row["epoch"]))
                logger.save()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # runs after validation in Lightning 2.x, so val metrics of this epoch are present
        row: dict[str, float] = {
            "epoch": float(trainer.current_epoch),
            "seconds": time.perf_counter() - self._t0,
        }
        for key in ROW_METRICS:
            if key in trainer.callback_metrics:
                row[key] = float(trainer.callback_metrics[key])
        lrs = [g["lr"] for opt in trainer.optimizers for g in opt.param_groups]
        if lrs:  # the largest: the fusion network's when fine-tuning (encoders train ~100x slower)
            row["lr"] = float(max(lrs))
        self.rows.append(row)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(row, step=int(row["epoch"]))
                logger.save()  # flushed every epoch: a kill loses at most the epoch in flight
            if self.hook is not None:
                self.hook(row)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict.get("rows", []))


class TrainingInterrupted(Exception):
    """Ctrl-C stopped ``trainer.fit``; the checkpoints stay, so rerunning the same command resumes."""


@dataclass(frozen=True)
class LoopSettings:
    """What the Trainer is built from: the parts of a run's config that are not the optimiser.

    `from_train_config` reads a `TrainConfig`; the zero-shot head fills it from its own config.
    ``devices`` is as Lightning takes it; ``devices_flag`` as the user wrote it (for error lines).
    """

    accelerator: str = "auto"
    devices: int | str | list[int] = 1
    devices_flag: str = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str | None = None
    grad_clip: float | None = 1.0
    monitor: str = "val_loss"
    patience: int = 10
    logger: LoggerKind = "csv"

    @classmethod
    def from_train_config(cls, cfg: Any, *, strategy: str | None = None) -> LoopSettings:
        """Settings of a `TrainConfig`; ``strategy`` overrides its (fine-tuning's DDP variant)."""
        from skyfuse.training.distributed import trainer_devices

        return cls(
            accelerator=cfg.accelerator,
            devices=trainer_devices(cfg),
            devices_flag=str(cfg.devices),
            strategy=strategy or cfg.strategy,
            num_nodes=cfg.num_nodes,
            precision=cfg.precision,
            grad_clip=cfg.grad_clip,
            monitor=cfg.monitor,
            patience=cfg.patience,
            logger=cfg.logger,
        )

    @property
    def mode(self) -> str:
        return "min" if self.monitor.endswith("loss") else "max"


def make_trainer(settings: Any, **kwargs: Any) -> L.Trainer:
    """A Lightning Trainer, or a one-line `ConfigError` for an accelerator/devices/strategy/precision
    this machine cannot run (Lightning raises a MisconfigurationException with a traceback).
    ``settings``: a `LoopSettings` or a `TrainConfig` (only ``accelerator`` / ``devices`` are read)."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    devices = getattr(settings, "devices_flag", None) or settings.devices
    try:
        return L.Trainer(**kwargs)
    except (MisconfigurationException, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"--accelerator {settings.accelerator} --devices {devices}: {first.rstrip('.!')};"
            " use --accelerator cpu (or auto) and --devices auto"
        ) from None


def _importable(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def check_logger(kind: str) -> None:
    """A one-line `ConfigError` when ``kind``'s package is not installed (call it before the
    expensive steps of a command, so a typo'd setup fails in a second, not after feature extraction)."""
    if kind not in ("csv", "none", *LOGGER_PACKAGES):
        raise ConfigError(f"--logger {kind}: choose csv, tensorboard, mlflow, wandb or none")
    packages = LOGGER_PACKAGES.get(kind, ())
    if packages and not any(_importable(p) for p in packages):
        raise ConfigError(
            f"--logger {kind} needs the {packages[0]} package: pip install 'skyfuse[{kind}]'"
        )


def make_logger(kind: str, run_dir: Path | None, version: str = "") -> Logger | None:
    """Lightning's logger of ``kind`` writing under ``run_dir/logs`` (``version`` names a sub-folder,
    e.g. ``refit``; "" = ``logs/`` itself, so the CSV file is ``run_dir/logs/metrics.csv``); None for
    ``none`` or without a run folder."""
    check_logger(kind)
    if run_dir is None or kind == "none":
        return None
    run_dir = Path(run_dir)
    if kind == "csv":
        # flushed by History every epoch; never by step count
        return CSVLogger(
            save_dir=run_dir, name=LOGS_DIR, version=version, flush_logs_every_n_steps=10**9
        )
    if kind == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        return TensorBoardLogger(
            save_dir=run_dir, name=LOGS_DIR, version=version, default_hp_metric=False
        )
    run_name = run_dir.name + (f"-{version}" if version else "")
    if kind == "mlflow":
        from lightning.pytorch.loggers import MLFlowLogger

        # MLFLOW_TRACKING_URI, when set, wins over the local folder
        return MLFlowLogger(
            experiment_name="skyfuse",
            run_name=run_name,
            save_dir=str(run_dir / LOGS_DIR / "mlruns"),
        )
    from lightning.pytorch.loggers import WandbLogger

    (run_dir / LOGS_DIR).mkdir(parents=True, exist_ok=True)
    return WandbLogger(project="skyfuse", name=run_name, save_dir=str(run_dir / LOGS_DIR))


@dataclass
class Loop:
    """A built Trainer with its History and (with a val split) BestWeights; `fit` resumes from
    ``last.ckpt`` when the checkpoint folder holds one."""

    trainer: L.Trainer
    history: History
    best: BestWeights | None
    resume_from: str | None = None

    def fit(self, task: L.LightningModule, **fit_kwargs: Any) -> None:
        fit_or_interrupt(
            self.trainer, task, ckpt_path=self.resume_from, weights_only=True, **fit_kwargs
        )

    @property
    def epochs_run(self) -> int:
        return len(self.history.rows) or int(self.trainer.current_epoch)

    def keep_best(self, module: nn.Module) -> int:
        """Load the chosen weights into ``module``: the best val epoch's with selection, else the
        last epoch's (already in place); returns the chosen epoch (0-based)."""
        if self.best is not None and self.best.best_state is not None:
            module.load_state_dict(self.best.best_state)
            return self.best.best_epoch
        return self.epochs_run - 1


def build_loop(
    settings: LoopSettings,
    *,
    max_epochs: int,
    has_val: bool,
    checkpoint_dir: Path | None = None,
    run_dir: Path | None = None,
    log_version: str = "",
    hparams: Mapping[str, Any] | None = None,
    on_epoch: EpochHook | None = None,
    callbacks: Iterable[Callback] = (),
    **trainer_kwargs: Any,
) -> Loop:
    """The Trainer of one training phase, with History, selection, checkpointing and logging.

    - ``has_val``: early stopping on ``settings.monitor`` (patience ``settings.patience``) and
      best-val weights; without val neither (fixed schedule, refit).
    - ``checkpoint_dir``: one rolling ``last.ckpt`` there, rewritten every epoch; a present one is
      resumed from by `Loop.fit`. None: no checkpoints.
    - ``run_dir``: per-epoch rows to ``settings.logger`` under ``run_dir/logs`` (``log_version``: a
      sub-folder for a second phase); ``hparams`` are logged once. None: no logs.
    - ``trainer_kwargs`` pass through to `lightning.Trainer` (e.g. ``log_every_n_steps``).
    """
    quiet_lightning()
    logger = make_logger(settings.logger, run_dir, log_version)
    history = History(on_epoch)
    best = BestWeights(settings.monitor, settings.mode) if has_val else None
    all_callbacks: list[Callback] = [history, *callbacks]
    if best is not None:
        all_callbacks.insert(0, best)
        all_callbacks.append(
            EarlyStopping(
                monitor=settings.monitor,
                mode=settings.mode,
                patience=settings.patience,
                check_on_train_epoch_end=False,
            )
        )
    resume_from: str | None = None
    if checkpoint_dir is not None:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        all_callbacks.append(  # one rolling file, rewritten every epoch: what a rerun resumes from
            ModelCheckpoint(
                dirpath=str(checkpoint_dir),
                filename="last",
                monitor=None,
                save_top_k=1,
                every_n_epochs=1,
                enable_version_counter=False,
            )
        )
        last = checkpoint_dir / "last.ckpt"
        resume_from = str(last) if last.is_file() else None
    kwargs: dict[str, Any] = {"precision": settings.precision} if settings.precision else {}
    kwargs.update(trainer_kwargs)
    trainer = make_trainer(
        settings,
        max_epochs=max_epochs,
        accelerator=settings.accelerator,
        devices=settings.devices,
        strategy=settings.strategy,
        num_nodes=settings.num_nodes,
        gradient_clip_val=settings.grad_clip,
        callbacks=all_callbacks,
        logger=logger if logger is not None else False,
        enable_checkpointing=checkpoint_dir is not None,
        enable_model_summary=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        limit_val_batches=None if has_val else 0,
        default_root_dir=str(checkpoint_dir or run_dir) if (checkpoint_dir or run_dir) else None,
        **kwargs,
    )
    if logger is not None and hparams:
        logger.log_hyperparams(dict(hparams))
    return Loop(trainer, history, best, resume_from)


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
