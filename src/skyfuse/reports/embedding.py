"""A 2-D map (t-SNE) of fused features coloured by class.

Why: whether the fused representation separates scene classes (and which ones it confuses) is easier
to see than to read from a table; the map is seeded so that two runs draw the same picture.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def tsne_2d(features: np.ndarray, *, seed: int = 0, perplexity: float | None = None) -> np.ndarray:
    """(M, 2) t-SNE coordinates of (M, D) features; perplexity defaults to min(30, (M - 1) / 3)."""
    x = np.asarray(features, dtype=np.float64)
    m = x.shape[0]
    if m < 3:
        raise ValueError(f"t-SNE needs at least 3 samples, got {m}")
    from sklearn.manifold import TSNE

    perp = perplexity if perplexity is not None else max(1.0, min(30.0, (m - 1) / 3.0))
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-8)
    tsne = TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed)
    return np.asarray(tsne.fit_transform(x))


def plot_embedding(
    points: np.ndarray,
    labels: Sequence[int],
    class_names: Sequence[str],
    out_png: Path,
    *,
    title: str = "t-SNE of fused features",
) -> Path:
    """Scatter the 2-D points, one colour per class, legend outside the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = np.asarray(points)
    lab = np.asarray(labels)
    n = len(class_names)
    cmap = plt.get_cmap("tab20" if n > 10 else "tab10")
    fig, ax = plt.subplots(figsize=(7.5 + 0.08 * max(0, n - 10), 6), dpi=100)
    for c in range(n):
        sel = lab == c
        if sel.any():
            ax.scatter(
                pts[sel, 0],
                pts[sel, 1],
                s=14,
                color=cmap(c % cmap.N),
                label=class_names[c],
                alpha=0.85,
            )
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


def plot_tsne(
    features: np.ndarray,
    labels: Sequence[int],
    class_names: Sequence[str],
    out_png: Path,
    *,
    seed: int = 0,
    title: str = "t-SNE of fused features",
) -> Path:
    """t-SNE of the features, drawn coloured by class, written to ``out_png``."""
    return plot_embedding(tsne_2d(features, seed=seed), labels, class_names, out_png, title=title)
