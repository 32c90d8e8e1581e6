"""Classification metrics of the field: OA, AA, Cohen's kappa, per-class P/R/F1 and the confusion matrix.

Why a dict of plain floats: it goes straight into ``metrics.json`` and into tables; values are fractions
in [0, 1] (tables show percent). AA is the mean recall over the classes that occur in ``y_true``, so a
test split that lacks a class does not drag AA down with a meaningless zero. Kappa, undefined (0/0)
when the expected agreement is 1 (a one-class scored part predicted as that class), is reported as 1.0
if all predictions are right and 0.0 otherwise, so it is never NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics.functional.classification import (
    multiclass_cohen_kappa,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

from skyfuse.errors import BadInputError


def _as_long(values: Any, name: str) -> torch.Tensor:
    t = torch.as_tensor(values).reshape(-1).long()
    if t.numel() == 0:
        raise BadInputError(f"{name} is empty; metrics need at least one prediction")
    return t


def classification_metrics(
    y_true: Sequence[int] | torch.Tensor,
    y_pred: Sequence[int] | torch.Tensor,
    class_names: Sequence[str],
) -> dict[str, Any]:
    """OA, AA, kappa, per-class precision/recall/F1/support and the confusion matrix (rows = truth)."""
    target = _as_long(y_true, "y_true")
    preds = _as_long(y_pred, "y_pred")
    if target.shape != preds.shape:
        raise BadInputError(f"y_true has {target.numel()} labels but y_pred {preds.numel()}")
    k = len(class_names)
    if k < 1:
        raise BadInputError("class_names is empty")
    bad = torch.cat([target, preds])
    if int(bad.min()) < 0 or int(bad.max()) >= k:
        raise BadInputError(f"labels must lie in [0, {k - 1}] for {k} class names")
    if k == 1:  # torchmetrics needs two classes; one class is trivially all-correct
        n = int(target.numel())
        return {
            "oa": 1.0,
            "aa": 1.0,
            "kappa": 1.0,
            "n": n,
            "per_class": {
                class_names[0]: {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": n}
            },
            "confusion": [[n]],
            "class_names": list(class_names),
        }
    cm = multiclass_confusion_matrix(preds, target, num_classes=k)
    support = cm.sum(dim=1)
    correct = cm.diag()
    oa = float(correct.sum()) / float(support.sum())
    present = support > 0
    recall_present = correct[present].double() / support[present].double()
    aa = float(recall_present.mean())
    kappa = float(multiclass_cohen_kappa(preds, target, num_classes=k))
    if not math.isfinite(kappa):
        # 0/0: expected agreement p_e is 1 (truth and predictions are one and the same class), so
        # kappa is undefined; report 1.0 when every prediction is right (then p_o = p_e = 1), else 0.0
        kappa = 1.0 if oa == 1.0 else 0.0
    prec = multiclass_precision(preds, target, num_classes=k, average=None, zero_division=0)
    rec = multiclass_recall(preds, target, num_classes=k, average=None, zero_division=0)
    f1 = multiclass_f1_score(preds, target, num_classes=k, average=None, zero_division=0)
    per_class = {
        name: {
            "precision": float(prec[i]),
            "recall": float(rec[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    }
    return {
        "oa": oa,
        "aa": aa,
        "kappa": kappa,
        "n": int(target.numel()),
        "per_class": per_class,
        "confusion": cm.tolist(),
        "class_names": list(class_names),
    }


def summary(metrics: dict[str, Any]) -> dict[str, float]:
    """The three headline numbers, for tables and logs."""
    return {key: float(metrics[key]) for key in ("oa", "aa", "kappa")}
