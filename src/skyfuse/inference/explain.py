"""`skyfuse explain`: attention overlays for a few images, a t-SNE map and a confusion matrix.

Why a module: the pictures a person looks at to trust (or distrust) a model come from one pass over a
sample of a folder through the same `Predictor` that serves predictions, so they show what the served
model does, not what a training run once did.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from skyfuse.data.images import load_image
from skyfuse.errors import BadInputError, ImageDecodeError
from skyfuse.inference.batch import CaptionLookup, InputImage, collect_inputs
from skyfuse.inference.predictor import Predictor, softmax_top_k


@dataclass
class ExplainSummary:
    """What `explain_path` wrote; `oa` only when the folder has class sub-folders the model knows."""

    images: int = 0
    labelled: bool = False
    oa: float | None = None
    files: list[Path] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def _labelled_items(path: Path, class_names: list[str]) -> list[tuple[InputImage, int]] | None:
    """Items with true labels when `path` is a scene folder whose classes the model knows."""
    from skyfuse.data.folder import SceneFolder

    if not path.is_dir():
        return None
    try:
        folder = SceneFolder(path)
    except BadInputError:
        return None
    index = {c: i for i, c in enumerate(class_names)}
    if not folder.classes or not set(folder.classes) <= set(index):
        return None
    return [(InputImage(s.rel, s.path), index[s.class_name]) for s in folder.samples]


def _sample(
    items: list[tuple[InputImage, int]], limit: int, seed: int
) -> list[tuple[InputImage, int]]:
    """Up to `limit` items, round-robin over labels so that every class is drawn (seeded)."""
    rng = random.Random(seed)
    groups: dict[int, list[tuple[InputImage, int]]] = {}
    for it in items:
        groups.setdefault(it[1], []).append(it)
    for g in groups.values():
        rng.shuffle(g)
    out: list[tuple[InputImage, int]] = []
    keys = sorted(groups)
    while len(out) < limit and any(groups[k] for k in keys):
        for k in keys:
            if groups[k] and len(out) < limit:
                out.append(groups[k].pop())
    return out


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:60] or "image"


def explain_path(
    predictor: Predictor,
    path: Path,
    out_dir: Path,
    *,
    captions: Mapping[str, str] | None = None,
    limit: int = 300,
    examples: int = 6,
    seed: int = 0,
    batch_size: int = 16,
    on_progress: Callable[[int], None] | None = None,
) -> ExplainSummary:
    """Write attention figures, ``tsne.png``, ``confusion.png/json`` (labelled folders) and
    ``explain.json`` (per-image predictions) to `out_dir`."""
    from skyfuse.inference.batch import plan_captions
    from skyfuse.reports.attention import plot_explanation

    path = Path(path)
    out_dir = Path(out_dir)
    names = predictor.class_names
    labelled = _labelled_items(path, names)
    summary = ExplainSummary(labelled=labelled is not None)
    pairs = labelled if labelled is not None else [(it, -1) for it in collect_inputs([path])]
    chosen = _sample(pairs, max(1, limit), seed)
    # refuse before writing anything when images lack captions the model's source cannot make
    plan_captions(predictor, [it for it, _ in chosen], captions)
    out_dir.mkdir(parents=True, exist_ok=True)
    fused_all: list[np.ndarray] = []
    y_true: list[int] = []
    y_pred: list[int] = []
    records: list[dict[str, Any]] = []
    n_examples = 0
    step = max(1, batch_size)
    find = CaptionLookup(captions) if captions else None
    policy = predictor.caption_policy
    for start in range(0, len(chosen), step):
        chunk = chosen[start : start + step]
        images, kept = [], []
        for it, label in chunk:
            try:
                images.append(load_image(it.path))
                kept.append((it, label))
            except ImageDecodeError as exc:
                summary.failed.append((it.key, exc.reason))
        if images:
            found = [find(it) if find is not None else None for it, _ in kept]
            sources = ["given" if c is not None else policy.source_id for c in found]
            missing = [i for i, c in enumerate(found) if c is None]
            if missing and policy.mode != "image-only":  # image-only: None is an absent caption
                made = predictor.caption([images[i] for i in missing])
                for i, c in zip(missing, made, strict=True):
                    found[i] = c
            caps = found
            want = n_examples < examples
            logits, fused, expl = predictor.forward(images, caps, explain=want)
            tops = softmax_top_k(logits, names, 3)
            for i, (it, label) in enumerate(kept):
                pred = int(torch.argmax(logits[i]))
                fused_all.append(fused[i].numpy())
                y_pred.append(pred)
                y_true.append(label)
                records.append(
                    {
                        "path": it.key,
                        "true": names[label] if label >= 0 else None,
                        "top_k": [t.to_dict() for t in tops[i]],
                        "caption": caps[i],
                        "caption_source": sources[i],
                        "caption_mismatch": sources[i] != "given" and policy.mismatch,
                    }
                )
                if expl is not None and n_examples < examples:
                    truth = f"true {names[label]} | " if label >= 0 else ""
                    title = f"{it.key}: {truth}predicted {tops[i][0].label} ({tops[i][0].prob:.2f})"
                    png = out_dir / "attention" / f"{n_examples:02d}_{_safe(Path(it.key).stem)}.png"
                    written = plot_explanation(
                        images[i], expl[i], png, title=title, caption=caps[i]
                    )
                    if written is not None:
                        summary.files.append(written)
                    n_examples += 1
        if on_progress is not None:
            on_progress(len(chunk))
    summary.images = len(records)
    if not records:
        raise BadInputError(f"{path}: no readable image to explain")
    _write_maps(summary, out_dir, np.stack(fused_all), y_true, y_pred, names, seed)
    (out_dir / "explain.json").write_text(
        json.dumps(
            {
                "model": str(predictor.model_dir),
                "source": str(path),
                "labelled": summary.labelled,
                "oa": summary.oa,
                "images": records,
                "failed": [{"path": k, "reason": r} for k, r in summary.failed],
            },
            indent=1,
            ensure_ascii=False,
        )
        + "\n",
        encoding="utf-8",
    )
    summary.files.append(out_dir / "explain.json")
    return summary


def _write_maps(
    summary: ExplainSummary,
    out_dir: Path,
    fused: np.ndarray,
    y_true: list[int],
    y_pred: list[int],
    names: list[str],
    seed: int,
) -> None:
    from skyfuse.reports.embedding import plot_tsne

    colour = y_true if summary.labelled else y_pred
    if len(fused) >= 5:
        what = "true class" if summary.labelled else "predicted class"
        summary.files.append(
            plot_tsne(
                fused,
                colour,
                names,
                out_dir / "tsne.png",
                seed=seed,
                title=f"t-SNE of fused features ({len(fused)} images, colour = {what})",
            )
        )
    if summary.labelled:
        from skyfuse.reports.confusion import plot_confusion, save_confusion_json
        from skyfuse.training.metrics import classification_metrics

        m = classification_metrics(y_true, y_pred, names)
        summary.oa = float(m["oa"])
        # two short lines: plot_confusion sizes the figure by the class count, not the title
        title = f"{len(y_true)} sampled images\nOA {100 * summary.oa:.1f} %"
        summary.files.append(
            plot_confusion(m["confusion"], names, out_dir / "confusion.png", title=title)
        )
        summary.files.append(save_confusion_json(m["confusion"], names, out_dir / "confusion.json"))
