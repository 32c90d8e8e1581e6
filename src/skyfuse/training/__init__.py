"""Training, evaluation and model bundles.

Submodules import Lightning and torch only when used: ``skyfuse.training.bundle`` (save/load bundles),
``metrics`` (OA, AA, kappa, per-class), ``fit`` (Lightning fitting with selection/refit/resume),
``run`` (one run to files), ``bench`` (models x seeds tables), ``finetune`` (end-to-end mode).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ModelBundle": "bundle",
    "save_bundle": "bundle",
    "load_bundle": "bundle",
    "classification_metrics": "metrics",
    "TrainConfig": "config",
    "TensorSet": "data",
    "train_features": "fit",
    "run_training": "run",
    "evaluate_model": "evaluate",
    "predict_logits": "evaluate",
    "linear_probe": "probe",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"skyfuse.training.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'skyfuse.training' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
