"""Zero-shot classification of classes never seen in training.

    >>> from skyfuse.zeroshot import load_zeroshot_model
    >>> zs = load_zeroshot_model("runs/zs/model")
    >>> zs.predict(images, captions, ["golf course", "helipad"], top_k=2)

Modules: `classes` (names, descriptions, templates), `embeddings` (class embeddings), `folds`
(seen/unseen splits), `aligned` (the trained candidates and their class-disjoint validation),
`head` / `task` (the older fusion semantic head and its training), `baselines`, `metrics`,
`protocol` (the end-to-end run), `model` (bundles), `report` (metrics.json / markdown).
Heavy modules load on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ClassSpec": "classes",
    "DEFAULT_TEMPLATES": "classes",
    "load_class_file": "classes",
    "resolve_classes": "classes",
    "class_embeddings": "embeddings",
    "ZeroShotFold": "folds",
    "make_folds": "folds",
    "class_folds": "folds",
    "AlignConfig": "aligned",
    "AlignedScorer": "aligned",
    "SemanticHead": "head",
    "HeadTrainConfig": "task",
    "train_semantic_head": "task",
    "caption_only_scores": "baselines",
    "clip_scores": "baselines",
    "ZeroShotModel": "model",
    "load_zeroshot_model": "model",
    "save_zeroshot_model": "model",
    "is_zeroshot_bundle": "model",
    "ZeroShotSettings": "protocol",
    "run_zeroshot": "protocol",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"skyfuse.zeroshot.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'skyfuse.zeroshot' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
