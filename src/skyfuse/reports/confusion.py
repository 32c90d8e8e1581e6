"""Confusion matrix as a picture and as JSON, so a run can be inspected without re-running it."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def plot_confusion(
    matrix: Sequence[Sequence[int]] | np.ndarray,
    class_names: Sequence[str],
    out_png: Path,
    *,
    title: str | None = None,
    normalize: bool = True,
) -> Path:
    """Write a row-normalised confusion matrix (rows = truth) to ``out_png``; returns the path.

    Large class counts get smaller fonts and no per-cell numbers, so 30-45 classes stay legible.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cm = np.asarray(matrix, dtype=np.float64)
    k = len(class_names)
    if cm.shape != (k, k):
        raise ValueError(f"confusion matrix is {cm.shape}, expected ({k}, {k}) for the class names")
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1.0) if normalize else cm
    side = max(4.0, min(16.0, 0.38 * k + 2.5))
    fig, ax = plt.subplots(figsize=(side, side), dpi=110)
    try:
        im = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
        font = max(5, min(10, int(220 / max(k, 1))))
        ax.set_xticks(range(k), labels=list(class_names), rotation=90, fontsize=font)
        ax.set_yticks(range(k), labels=list(class_names), fontsize=font)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if (
            title
        ):  # wrapped to the figure so a long title on a small (few-class) plot is not clipped
            ax.set_title(textwrap.fill(title, width=max(24, int(7.5 * side))))
        if k <= 20:
            for i in range(k):
                for j in range(k):
                    if cm[i, j]:
                        val = f"{shown[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
                        color = "white" if shown[i, j] > 0.5 * float(shown.max() or 1) else "black"
                        ax.text(j, i, val, ha="center", va="center", fontsize=font - 1, color=color)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        fig.tight_layout()
        out_png = Path(out_png)
        out_png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out_png, bbox_inches="tight", pad_inches=0.1)
    finally:
        plt.close(fig)
    return out_png


def save_confusion_json(
    matrix: Sequence[Sequence[int]] | np.ndarray, class_names: Sequence[str], out_json: Path
) -> Path:
    """Write ``{"class_names": [...], "matrix": [[...]]}`` (rows = truth, columns = prediction)."""
    out_json = Path(out_json)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "class_names": list(class_names),
        "rows": "true",
        "columns": "predicted",
        "matrix": np.asarray(matrix).astype(int).tolist(),
    }
    out_json.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return out_json
