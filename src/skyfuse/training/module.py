"""The Lightning task that trains a fusion model on token features (frozen-feature mode).

Why Lightning: DDP, multi-node, bf16-mixed, gradient clipping, checkpointing and resume come from it
rather than from our code. The task itself only knows the loss, the metrics and the optimiser.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from skyfuse.training.config import TrainConfig

INPUTS = ("image_tokens", "image_mask", "text_tokens", "text_mask")


def model_inputs(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The four model inputs of a batch, token features as float32 (autocast narrows them)."""
    return (
        batch["image_tokens"].float(),
        batch["image_mask"].bool(),
        batch["text_tokens"].float(),
        batch["text_mask"].bool(),
    )


def schedule_factor(cfg: TrainConfig, epoch_float: float) -> float:
    """Learning-rate multiplier at a (fractional) epoch: linear warm-up, then cosine / step / constant."""
    warm = cfg.warmup_epochs
    if warm and epoch_float < warm:
        return max(0.05, epoch_float / warm)
    if cfg.schedule == "cosine":
        span = max(1e-9, cfg.epochs - warm)
        progress = min(1.0, (epoch_float - warm) / span)
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress))
    if cfg.schedule == "step":
        return float(cfg.gamma ** int(epoch_float // cfg.step_size))
    return 1.0


class FusionTask(L.LightningModule):
    """Cross-entropy training of ``model`` with AdamW and a per-step schedule."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, *, steps_per_epoch: int) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.steps_per_epoch = max(1, steps_per_epoch)
        self._val_loss = 0.0
        self._val_correct = 0
        self._val_n = 0

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(*model_inputs(batch)).logits

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self(batch)
        loss = F.cross_entropy(logits, batch["label"], label_smoothing=self.cfg.label_smoothing)
        # epoch means for the loop's History, which writes them to the loggers itself (one row per
        # epoch), hence logger=False; accuracy on the augmented training batches, rank 0's share
        n = int(logits.shape[0])
        acc = (logits.detach().argmax(-1) == batch["label"]).float().mean()
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=n, logger=False)
        self.log("train_acc", acc, on_step=False, on_epoch=True, batch_size=n, logger=False)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_loss, self._val_correct, self._val_n = 0.0, 0, 0

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self(batch).float()
        loss = F.cross_entropy(logits, batch["label"], reduction="sum")
        self._val_loss += float(loss)
        self._val_correct += int((logits.argmax(-1) == batch["label"]).sum())
        self._val_n += int(batch["label"].numel())

    def on_validation_epoch_end(self) -> None:
        totals = torch.tensor(
            [self._val_loss, float(self._val_correct), float(self._val_n)], device=self.device
        )
        gathered = self.all_gather(totals)
        assert isinstance(gathered, torch.Tensor)
        totals = gathered
        if totals.ndim > 1:
            totals = totals.sum(dim=0)
        n = max(1.0, float(totals[2]))
        self.log("val_loss", float(totals[0]) / n, sync_dist=False, logger=False)
        self.log("val_acc", float(totals[1]) / n, sync_dist=False, logger=False)

    def configure_optimizers(self) -> Any:
        opt = torch.optim.AdamW(
            self.parameter_groups(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay
        )
        per_epoch = self.steps_per_epoch
        cfg = self.cfg

        def factor(step: int) -> float:  # a plain function: LambdaLR saves no state for it
            return schedule_factor(cfg, step / per_epoch)

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda=factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def parameter_groups(self) -> list[dict[str, Any]]:
        """No weight decay on biases and norms (the usual AdamW practice)."""
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim < 2 or name.endswith(".bias") else decay).append(p)
        groups: list[dict[str, Any]] = [{"params": decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        return groups
