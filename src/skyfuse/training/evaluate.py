"""Scoring a trained fusion model on labelled features: logits, predictions and the field's metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from skyfuse.training.data import TensorBatches, TensorSet
from skyfuse.training.metrics import classification_metrics
from skyfuse.training.module import model_inputs


@torch.inference_mode()
def predict_logits(
    model: nn.Module, data: TensorSet, *, batch_size: int = 256, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """(M, C) float32 logits in the order of ``data`` (eval mode, no gradients)."""
    was_training = model.training
    model.eval()
    model.to(device)
    out = []
    for batch in TensorBatches(data, batch_size, shuffle=False):
        inputs = [t.to(device) for t in model_inputs(batch)]
        out.append(model(*inputs).logits.float().cpu())
    model.train(was_training)
    if not out:
        return torch.zeros((0, 0))
    return torch.cat(out)


def evaluate_model(
    model: nn.Module,
    data: TensorSet,
    class_names: Sequence[str],
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """`classification_metrics` of the model's arg-max predictions on ``data``."""
    logits = predict_logits(model, data, batch_size=batch_size, device=device)
    return classification_metrics(data.labels, logits.argmax(dim=-1), class_names)
