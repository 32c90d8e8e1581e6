"""Zero-shot metrics: ZSL top-k on unseen classes, GZSL seen / unseen accuracy and harmonic mean.

Accuracies are per-class means (the average over classes of each class's top-1), the convention of
Xian et al. (2018), so a large class cannot hide a failed small one. All values are fractions in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch


def per_class_topk(
    scores: torch.Tensor, labels: torch.Tensor, k: int = 1, num_classes: int | None = None
) -> float:
    """Mean over the classes present in `labels` of the fraction whose label is in the top `k`."""
    if scores.shape[0] == 0:
        return float("nan")
    k = min(k, scores.shape[1])
    hit = (scores.topk(k, dim=1).indices == labels[:, None]).any(dim=1).float()
    accs = [hit[labels == c].mean().item() for c in labels.unique().tolist()]
    return float(sum(accs) / len(accs))


def zsl_metrics(scores: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Unseen test images scored against the unseen classes only: top-1 and top-5."""
    return {"top1": per_class_topk(scores, labels, 1), "top5": per_class_topk(scores, labels, 5)}


def harmonic_mean(a: float, b: float) -> float:
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def gzsl_metrics(
    scores: torch.Tensor, labels: torch.Tensor, is_unseen_image: torch.Tensor
) -> dict[str, float]:
    """Seen + unseen test images scored against all classes; seen/unseen accuracies and their H."""
    seen = per_class_topk(scores[~is_unseen_image], labels[~is_unseen_image], 1)
    unseen = per_class_topk(scores[is_unseen_image], labels[is_unseen_image], 1)
    return {"seen": seen, "unseen": unseen, "h": harmonic_mean(seen, unseen)}


def mean_std(values: Sequence[float]) -> dict[str, Any]:
    """{"mean", "std", "folds"}; sample std (ddof=1), 0 for a single fold."""
    vals = [float(v) for v in values]
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return {"mean": mean, "std": std, "folds": vals}


def aggregate(per_fold: Sequence[Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, Any]]:
    """[{"zsl": {"top1": x, ...}, "gzsl": {...}}, ...] -> {"zsl": {"top1": {"mean", "std", "folds"}}}."""
    out: dict[str, dict[str, Any]] = {}
    for group in per_fold[0]:
        out[group] = {
            key: mean_std([fold[group][key] for fold in per_fold]) for key in per_fold[0][group]
        }
    return out
