"""Scoring a trained fusion model on labelled features: logits, predictions and the field's metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from skyfuse.training.data import TensorSet
from skyfuse.training.metrics import classification_metrics
from skyfuse.training.module import model_inputs


@torch.inference_mode()
def predict_logits(
    model: nn.Module, data: TensorSet, *, batch_size: int = 256, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """(M, C) float32 logits in the order of ``data`` (eval mode, no gradients).

    When ``data`` holds several dihedral views of each image, the class probabilities of all views
    are averaged (test-time augmentation) and their log is returned.
    """
    was_training = model.training
    model.eval()
    model.to(device)
    per_view = []
    for view in range(data.num_views):
        out = []
        for start in range(0, len(data), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(data)))
            batch = data.take(idx, view if data.num_views > 1 else None)
            inputs = [t.to(device) for t in model_inputs(batch)]
            out.append(model(*inputs).logits.float().cpu())
        per_view.append(torch.cat(out) if out else torch.zeros((0, 0)))
    model.train(was_training)
    if len(per_view) == 1:
        return per_view[0]
    probs = torch.stack([v.softmax(dim=-1) for v in per_view]).mean(dim=0)
    return probs.clamp_min(1e-12).log()


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
