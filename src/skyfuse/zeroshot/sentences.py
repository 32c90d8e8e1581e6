"""Caption vectors as the mean of their sentences' vectors.

Human caption sets (RSICD, UCM, Sydney) give several sentences per image, which `load_captions`
joins into one caption; encoding the joined text at once lets one long sentence dominate the
pooled vector. Encoding each sentence alone and averaging the (L2-normalised) sentence vectors
scores a class by the mean cosine of the sentences, each sentence weighted equally. On validation
classes (never unseen test classes) this beat the joined caption for every caption setting measured
(docs/zeroshot.md, "How the defaults were chosen"), so the aligned candidates use it by default
(`AlignConfig.caption_sentences`). The caption-only baseline keeps the joined caption vector.

Sentences go through the same feature cache as captions (keyed by text), so a rerun encodes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

_BOUNDARY = re.compile(r"(?<=[.!?])\s+")


def split_sentences(text: str) -> list[str]:
    """The sentences of a caption (split after ``.``, ``!`` or ``?`` followed by white space);
    the stripped caption itself when it has no boundary, and ``[""]`` for an empty caption."""
    parts = [p.strip() for p in _BOUNDARY.split(str(text or "").strip())]
    return [p for p in parts if p] or [str(text or "").strip()]


def _encode(texts: Sequence[str], encoder: Any, cache_dir: Path | None, batch_size: int) -> Tensor:
    """(N, D) pooled vectors of distinct `texts`, through the feature cache when one is given."""
    from skyfuse.encoders.features import _use_cache

    if not _use_cache(cache_dir, encoder):
        out = [
            encoder.encode_texts(list(texts[i : i + batch_size])).pooled.float()
            for i in range(0, len(texts), batch_size)
        ]
        return torch.cat(out) if out else torch.zeros(0, int(encoder.dim))
    from skyfuse.encoders.cache import FeatureCache, text_key
    from skyfuse.encoders.features import _Progress, _text_entries

    assert cache_dir is not None
    cache = FeatureCache(Path(cache_dir), encoder.encoder_id, "text", dim=encoder.dim)
    keys = [text_key(t) for t in texts]
    entries = cache.get(keys)
    todo = [(k, t) for k, t in zip(keys, texts, strict=True) if k not in entries]
    if todo:
        with _Progress(False) as bar:
            done, _ = _text_entries(
                todo,
                encoder,
                cache,
                batch_size=batch_size,
                device="cpu",
                bar=bar,
                task=bar.task("sentence features", len(todo)),
            )
        entries.update(done)
    return torch.stack([entries[k][1].float() for k in keys])


def sentence_mean_vectors(
    captions: Sequence[str],
    encoder: Any,
    *,
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
) -> Tensor:
    """(M, D) L2-normalised mean of each caption's L2-normalised sentence vectors."""
    per = [split_sentences(c) for c in captions]
    distinct = list(dict.fromkeys(s for ss in per for s in ss))
    index = {s: i for i, s in enumerate(distinct)}
    vecs = F.normalize(
        _encode(distinct, encoder, Path(cache_dir) if cache_dir else None, batch_size), dim=-1
    )
    if not per:
        return torch.zeros(0, vecs.shape[-1] if vecs.ndim == 2 else int(encoder.dim))
    rows = [vecs[[index[s] for s in ss]].mean(0) for ss in per]
    return F.normalize(torch.stack(rows), dim=-1)
