"""Training curves: loss and accuracy per epoch, with the epoch whose weights were kept marked.

Why: a run's numbers say how good the chosen weights are, not whether training was still improving,
over-fitting or unstable; one picture beside the confusion matrix answers that without re-running.
Rows are the per-epoch dicts of the training loop (`skyfuse.training.loop.History`): as kept in
``metrics.json`` (``training.history`` / ``refit_history``) or read back from ``logs/metrics.csv``
with `read_metrics_csv`, so ``skyfuse report`` can redraw any run.
"""

from __future__ import annotations

import csv
import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

Row = Mapping[str, float]


def read_metrics_csv(path: Path) -> list[dict[str, float]]:
    """Rows of a Lightning CSV log (``logs/metrics.csv``), numbers as floats, empty cells left out,
    sorted by epoch."""
    rows: list[dict[str, float]] = []
    with Path(path).open(newline="", encoding="utf-8") as fh:
        for raw in csv.DictReader(fh):
            row: dict[str, float] = {}
            for key, value in raw.items():
                if key is None or value is None or value == "":
                    continue
                try:
                    row[key] = float(value)
                except ValueError:
                    continue
            if row:
                rows.append(row)
    return sorted(rows, key=lambda r: r.get("epoch", r.get("step", 0.0)))


def _series(rows: Sequence[Row], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for i, row in enumerate(rows):
        value = row.get(key)
        if value is None or not math.isfinite(float(value)):
            continue
        xs.append(float(row.get("epoch", i)) + 1.0)  # epochs shown 1-based, as reports count them
        ys.append(float(value))
    return xs, ys


def plot_curves(
    rows: Sequence[Row],
    path: Path,
    *,
    chosen_epoch: int | None = None,
    title: str | None = None,
    refit_rows: Sequence[Row] | None = None,
) -> Path:
    """Write loss (left) and accuracy (right) per epoch to ``path`` (PNG, replaced atomically).

    ``rows``: one dict per epoch with ``epoch`` (0-based) and any of ``train_loss``, ``val_loss``,
    ``train_acc``, ``val_acc``. ``chosen_epoch`` (0-based; default the last row's) is marked with a
    vertical line: the best val epoch with val selection, the last with the fixed schedule.
    ``refit_rows``: the refit on train + val, drawn dashed; it runs for ``chosen_epoch + 1`` epochs.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if chosen_epoch is None and rows:
        chosen_epoch = int(rows[-1].get("epoch", len(rows) - 1))
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), dpi=110)
    try:
        panels = (("loss", "loss"), ("acc", "accuracy"))
        for ax, (suffix, label) in zip(axes, panels, strict=True):
            for key, style, name in (
                (f"train_{suffix}", "-", "train"),
                (f"val_{suffix}", "-", "val"),
            ):
                xs, ys = _series(rows, key)
                if xs:
                    ax.plot(xs, ys, style, marker="." if len(xs) < 40 else None, label=name)
            if refit_rows:
                xs, ys = _series(refit_rows, f"train_{suffix}")
                if xs:
                    ax.plot(xs, ys, "--", label="refit train (train+val)")
            if chosen_epoch is not None and chosen_epoch >= 0:
                ax.axvline(
                    chosen_epoch + 1,
                    color="grey",
                    linestyle=":",
                    label=f"chosen: epoch {chosen_epoch + 1}",
                )
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 1.4
            ax.set_ylabel(label)
            if suffix == "acc":
                ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
        if title:
            fig.suptitle(textwrap.fill(title, width=90), fontsize=10)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        fig.savefig(tmp, format="png", bbox_inches="tight", pad_inches=0.1)
        os.replace(tmp, path)  # a reader never sees half a picture
    finally:
        plt.close(fig)
    return path


def run_curves(
    result: Mapping[str, Any],
) -> tuple[list[dict[str, float]], int | None, list[dict[str, float]] | None]:
    """(rows, chosen epoch, refit rows) of a run's ``metrics.json`` dict.

    The fixed schedule keeps its one phase in ``training.refit_history`` (it trains on train + val):
    its rows are drawn as the curve, the last epoch chosen. With val selection the selection curve
    is drawn with its best epoch and, after ``--refit``, the refit curve beside it.
    """
    tr = result.get("training") or {}
    history = list(tr.get("history") or [])
    refit = list(tr.get("refit_history") or []) or None
    if not history and refit:  # the fixed schedule
        return refit, len(refit) - 1, None
    best = tr.get("best_epoch")
    chosen = int(best) if best is not None and int(best) >= 0 else len(history) - 1
    return history, chosen, refit


def plot_run_curves(result: Mapping[str, Any], path: Path) -> Path | None:
    """``curves.png`` of a finished run (its ``metrics.json`` dict); None when it has no rows."""
    rows, chosen, refit = run_curves(result)
    if not rows:
        return None
    has_val = any("val_loss" in r for r in rows)
    how = "best val epoch" if has_val else "last epoch"
    if refit:
        how += f", then refit on train+val for {len(refit)} epochs"
    elif not has_val and (result.get("train_config") or {}).get("selection") == "fixed":
        how += " of the fixed schedule"
    title = f"{result.get('model', 'model')}: chosen epoch {(chosen or 0) + 1} ({how})"
    return plot_curves(rows, path, chosen_epoch=chosen, title=title, refit_rows=refit)
