"""The report page's pictures as PNG files: OA bars with error bars and a per-class F1 heat map
(training curves: `skyfuse.reports.curves`). Matplotlib with the Agg backend, imported inside each
function."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: one colour per group, in order (matplotlib's tab10, which stays distinct in print)
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight", pad_inches=0.08)
    return path


def plot_oa_bars(
    labels: Sequence[str],
    means: Sequence[float],
    stds: Sequence[float],
    counts: Sequence[int],
    path: Path,
    *,
    title: str = "Test OA (mean ± sample std over runs)",
    muted: Sequence[bool] | None = None,
) -> Path:
    """Horizontal bars of OA in percent with ± std whiskers, one per group, labelled with the value
    and the number of runs; the best group's bar is outlined and ``muted`` bars (probes) are grey."""
    plt = _pyplot()
    k = len(labels)
    wrapped = [textwrap.fill(lab, 34) for lab in labels]
    lines = sum(w.count("\n") + 1 for w in wrapped)
    fig, ax = plt.subplots(figsize=(7.5, 1.0 + 0.38 * max(k, lines * 0.8)), dpi=110)
    try:
        y = np.arange(k)
        err = [0.0 if math.isnan(s) else s for s in stds]
        grey = list(muted or [False] * k)
        colors = [
            "#b8bec8" if grey[i] else PALETTE[sum(not g for g in grey[:i]) % len(PALETTE)]
            for i in range(k)
        ]
        bars = ax.barh(y, means, xerr=err, color=colors, alpha=0.85, capsize=4, height=0.62)
        finite = [m for m in means if not math.isnan(m)]
        if finite:
            bars[int(np.nanargmax(np.asarray(means, dtype=float)))].set_edgecolor("black")
            bars[int(np.nanargmax(np.asarray(means, dtype=float)))].set_linewidth(1.6)
        for yi, m, s, n in zip(y, means, err, counts, strict=True):
            ax.text(
                min(m + s, 100.0) + 1.0, yi, f"{m:.1f} ± {s:.1f}  (n={n})", va="center", fontsize=8
            )
        ax.set_yticks(y, labels=wrapped, fontsize=9)
        ax.invert_yaxis()
        ax.set_xlim(0, 125)
        ax.set_xticks(range(0, 101, 20))
        ax.set_xlabel("OA (%)")
        ax.grid(axis="x", alpha=0.3)
        ax.set_axisbelow(True)
        ax.spines[["top", "right"]].set_visible(False)
        ax.set_title(title, fontsize=10)
        fig.tight_layout()
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_f1_heatmap(
    labels: Sequence[str],
    classes: Sequence[str],
    f1: Sequence[Sequence[float]],
    path: Path,
    *,
    title: str = "Per-class F1 (%), mean over runs",
) -> Path:
    """Heat map of F1 in percent, ``f1[group][class]``: groups as rows and classes as columns, or
    transposed when there are more than 12 classes (a tall map stays legible where a wide one would
    shrink). Every cell is annotated with its value."""
    plt = _pyplot()
    data = np.asarray(f1, dtype=np.float64)
    models = [textwrap.shorten(lab, 40) for lab in labels]
    names = list(classes)
    transpose = len(names) > max(12, len(models))
    if transpose:
        data, row_names, col_names = data.T, names, models
    else:
        row_names, col_names = models, names
    rows, cols = data.shape
    width = min(16.0, max(5.0, 0.62 * cols + 0.09 * max(map(len, row_names)) + 2.2))
    height = min(30.0, max(2.2, 0.36 * rows + 1.9))
    fig, ax = plt.subplots(figsize=(width, height), dpi=110)
    try:
        im = ax.imshow(data, cmap="viridis", vmin=0.0, vmax=100.0, aspect="auto")
        font = 8 if cols <= 14 else 7
        if transpose:  # models along the top, readable without rotation when short
            ax.xaxis.tick_top()
            ax.set_xticks(range(cols), labels=col_names, rotation=30, ha="left", fontsize=9)
        else:
            ax.set_xticks(range(cols), labels=col_names, rotation=45, ha="right", fontsize=9)
        ax.set_yticks(range(rows), labels=row_names, fontsize=9)
        for i in range(rows):
            for j in range(cols):
                v = data[i, j]
                if math.isnan(v):
                    continue
                color = "black" if v > 60 else "white"
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=font, color=color)
        fig.colorbar(
            im, ax=ax, fraction=0.04, pad=0.03, label="F1 (%)", shrink=min(1.0, 6 / rows + 0.3)
        )
        ax.set_title(title, fontsize=10, pad=12 if not transpose else 40)
        fig.tight_layout()
        return _save(fig, path)
    finally:
        plt.close(fig)
