"""Linear probes on pooled features: the floors every fusion model must clear.

Why: a fusion network that cannot beat logistic regression on the encoders' own pooled vectors adds
nothing. The probe follows torchgeo-bench: standardise, choose the inverse regularisation C on val,
refit on train + val with that C, score test once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from skyfuse.training.metrics import classification_metrics

C_GRID = (0.1, 1.0, 10.0)


def _fit(x: np.ndarray, y: np.ndarray, c: float, seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=500, random_state=seed))
    clf.fit(x, y)
    return clf


def linear_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray | None,
    y_val: np.ndarray | None,
    x_test: np.ndarray,
    y_test: np.ndarray,
    class_names: Sequence[str],
    *,
    c_grid: Sequence[float] = C_GRID,
    seed: int = 0,
) -> dict[str, Any]:
    """Logistic regression with C chosen on val and a refit on train + val; returns test metrics + C."""
    best_c, best_acc = float(c_grid[len(c_grid) // 2]), -1.0
    has_val = x_val is not None and y_val is not None and len(y_val) > 0
    if has_val and len(c_grid) > 1:
        assert x_val is not None and y_val is not None
        for c in c_grid:
            acc = float((_fit(x_train, y_train, c, seed).predict(x_val) == y_val).mean())
            if acc > best_acc:
                best_c, best_acc = float(c), acc
    if has_val:
        assert x_val is not None and y_val is not None
        x_fit, y_fit = np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val])
    else:
        x_fit, y_fit = x_train, y_train
    clf = _fit(x_fit, y_fit, best_c, seed)
    metrics = classification_metrics(y_test.tolist(), clf.predict(x_test).tolist(), class_names)
    metrics["probe_c"] = best_c
    return metrics


PROBE_INPUTS = {
    "probe-image": ("image",),
    "probe-text": ("text",),
    "probe-image+text": ("image", "text"),
}


def pooled_matrix(
    pooled: dict[str, np.ndarray], inputs: Sequence[str], rows: np.ndarray
) -> np.ndarray:
    """Concatenate the pooled vectors named in ``inputs`` for the given row indices."""
    return np.concatenate([pooled[name][rows] for name in inputs], axis=1).astype(np.float32)
