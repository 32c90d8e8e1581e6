"""Zero-shot baselines that need no training.

- caption-only: the caption's pooled sentence vector against the class embeddings (text alone; with
  raw VLM captions this mostly measures how often the caption names the class);
- CLIP: an open_clip image embedding against class prompts embedded by the same model's text tower
  (needs the optional ``openclip`` extra and a local checkpoint).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from skyfuse.errors import ConfigError
from skyfuse.zeroshot.classes import DEFAULT_TEMPLATES, ClassSpec


def caption_only_scores(caption_vec: torch.Tensor, class_embeddings: torch.Tensor) -> torch.Tensor:
    """(M, C) cosine similarity of each caption vector to each class embedding."""
    return (
        F.normalize(caption_vec.float(), dim=-1) @ F.normalize(class_embeddings.float(), dim=-1).T
    )


def clip_scores(
    encoder: str,
    image_paths: Sequence[str],
    specs: Sequence[ClassSpec],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    *,
    batch_size: int = 32,
) -> torch.Tensor:
    """(M, C) CLIP image-to-class-prompt cosines; `encoder` is ``openclip:<arch>@<checkpoint>``."""
    if not encoder.lower().startswith("openclip:"):
        raise ConfigError(
            f"the CLIP baseline needs an open_clip model, got {encoder!r};"
            " pass openclip:<arch>@<checkpoint file> (pip install 'skyfuse[openclip]')"
        )
    from skyfuse.data.images import load_image
    from skyfuse.encoders import create_image_encoder, create_text_encoder
    from skyfuse.zeroshot.embeddings import class_embeddings

    text_encoder = create_text_encoder(encoder)
    image_encoder = create_image_encoder(encoder)
    classes = class_embeddings(text_encoder, specs, templates)
    parts = []
    with torch.no_grad():
        for i in range(0, len(image_paths), batch_size):
            images = [load_image(p) for p in image_paths[i : i + batch_size]]
            pooled = image_encoder.encode(image_encoder.preprocess(images)).pooled
            parts.append(F.normalize(pooled.float(), dim=-1) @ classes.T)
    return torch.cat(parts) if parts else torch.zeros(0, len(specs))
