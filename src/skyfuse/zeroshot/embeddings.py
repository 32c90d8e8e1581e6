"""Class embeddings in the text encoder's sentence space.

Each class's embedding is the mean of the L2-normalised pooled vectors of all its texts (every template
filled with the class phrase, plus every description), normalised again: the open_clip recipe of prompt
ensembling, extended with descriptions so an unseen class is more than its name.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from skyfuse.encoders.base import TextEncoder
from skyfuse.zeroshot.classes import DEFAULT_TEMPLATES, ClassSpec


@torch.no_grad()
def embed_texts(
    text_encoder: TextEncoder, texts: Sequence[str], batch_size: int = 64
) -> torch.Tensor:
    """(N, D) float32 L2-normalised pooled vectors."""
    parts = []
    for i in range(0, len(texts), batch_size):
        pooled = text_encoder.encode_texts(list(texts[i : i + batch_size])).pooled
        parts.append(F.normalize(pooled.float(), dim=-1))
    return torch.cat(parts) if parts else torch.zeros(0, text_encoder.dim)


@torch.no_grad()
def class_embeddings(
    text_encoder: TextEncoder,
    specs: Sequence[ClassSpec],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    *,
    batch_size: int = 64,
) -> torch.Tensor:
    """(C, D) float32 L2-normalised class embeddings, row order = `specs` order."""
    texts: list[str] = []
    owner: list[int] = []
    for i, spec in enumerate(specs):
        mine = spec.texts(templates)
        texts += mine
        owner += [i] * len(mine)
    vectors = embed_texts(text_encoder, texts, batch_size)
    index = torch.tensor(owner)
    sums = torch.zeros(len(specs), vectors.shape[1]).index_add_(0, index, vectors)
    return F.normalize(sums, dim=-1)
