"""Small deterministic stand-ins for encoders and features, so head tests need no model weights."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from skyfuse.encoders.base import ImagePreprocess, TokenBatch


def word_vector(word: str, dim: int) -> torch.Tensor:
    seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "little")
    return torch.randn(dim, generator=torch.Generator().manual_seed(seed))


class BagOfWordsText:
    """Text encoder: one fixed random vector per word; tokens = words, pooled = their mean."""

    encoder_id = "fake-bow"

    def __init__(self, dim: int = 16, max_length: int = 12) -> None:
        self.dim = dim
        self.max_length = max_length

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def encode(self, batch: dict[str, torch.Tensor]) -> TokenBatch:
        raise NotImplementedError

    def encode_texts(self, texts: Sequence[str]) -> TokenBatch:
        words = [
            (t.lower().replace(".", " ").split() or ["<empty>"])[: self.max_length] for t in texts
        ]
        n = max(len(w) for w in words)
        tokens = torch.zeros(len(texts), n, self.dim)
        mask = torch.zeros(len(texts), n, dtype=torch.bool)
        for i, ws in enumerate(words):
            for j, w in enumerate(ws):
                tokens[i, j] = word_vector(w, self.dim)
                mask[i, j] = True
        pooled = (tokens * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return TokenBatch(tokens, mask, pooled)


class MeanColourImage:
    """Image encoder: 4 quadrant mean colours, each mapped by a fixed random matrix to `dim`."""

    encoder_id = "fake-colour"

    def __init__(self, dim: int = 8) -> None:
        self.dim = dim
        self.preprocess_cfg = ImagePreprocess(16, (0.5,) * 3, (0.5,) * 3)  # type: ignore[call-arg]
        self.proj = torch.randn(3, dim, generator=torch.Generator().manual_seed(0))

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        arrs = [
            np.asarray(im.convert("RGB").resize((16, 16)), dtype=np.float32) / 255 for im in images
        ]
        return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2)

    def encode(self, pixels: torch.Tensor) -> TokenBatch:
        q = torch.nn.functional.adaptive_avg_pool2d(pixels, 2).flatten(2).transpose(1, 2)
        tokens = q @ self.proj
        return TokenBatch(tokens, torch.ones(tokens.shape[:2], dtype=torch.bool), tokens.mean(1))


@dataclass
class Features:
    """FeatureSet-like rows for ZeroShotData.from_features."""

    rels: list[str]
    image_tokens: torch.Tensor
    image_mask: torch.Tensor
    text_tokens: torch.Tensor
    text_mask: torch.Tensor
    text_pooled: torch.Tensor


def linear_world(
    n_classes: int = 12, per_class: int = 24, dim: int = 16, image_dim: int = 24, seed: int = 0
) -> tuple[list[str], torch.Tensor, Features]:
    """Images whose tokens are a fixed linear image of their class embedding plus noise; captions
    are pure noise. A class-agnostic projection exists, so unseen classes are learnable zero-shot."""
    g = torch.Generator().manual_seed(seed)
    classes = [f"k{i:02d}" for i in range(n_classes)]
    emb = torch.nn.functional.normalize(torch.randn(n_classes, dim, generator=g), dim=-1)
    mix = torch.randn(dim, image_dim, generator=g)
    rels, toks = [], []
    for c in range(n_classes):
        for i in range(per_class):
            rels.append(f"{classes[c]}/{i}.png")
            base = emb[c] @ mix
            toks.append(base + 0.3 * torch.randn(4, image_dim, generator=g))
    m = len(rels)
    feats = Features(
        rels,
        torch.stack(toks).half(),
        torch.ones(m, 4, dtype=torch.bool),
        torch.randn(m, 5, dim, generator=g).half(),
        torch.ones(m, 5, dtype=torch.bool),
        torch.randn(m, dim, generator=g),
    )
    return classes, emb, feats


CONCEPTS = (
    "alder", "birch", "cedar", "dune", "estuary", "fjord", "geyser", "heath", "islet", "jetty",
)  # fmt: skip


def concept_world(
    n_seen: int = 6, per_class: int = 40, image_dim: int = 32, text_dim: int = 24, seed: int = 0
) -> tuple[list[str], list[str], dict[str, torch.Tensor], Features]:
    """Scenes that show two concepts each: their class (the main one) and a second, drawn from *all*
    concepts. Captions name both; class names are single concept words. Classes of the first
    `n_seen` concepts are seen, the rest unseen, so the unseen concepts appear in training captions
    (and pixels) but in no training class name: only an image side aligned to the captions can
    learn them.

    Returns (seen classes, unseen classes, class embeddings {name: vector}, features).
    """
    g = torch.Generator().manual_seed(seed)
    text = BagOfWordsText(dim=text_dim)
    looks = torch.randn(len(CONCEPTS), image_dim, generator=g)  # each concept's visual signature
    rels, images, captions = [], [], []
    for k, main in enumerate(CONCEPTS):
        for i in range(per_class):
            other = int(torch.randint(len(CONCEPTS) - 1, (1,), generator=g))
            other += int(other >= k)
            images.append(looks[k] + 0.7 * looks[other] + 0.3 * torch.randn(image_dim, generator=g))
            captions.append(f"{main} {CONCEPTS[other]}")
            rels.append(f"{main}/{i}.png")
    pooled = text.encode_texts(captions).pooled
    m = len(rels)
    feats = Features(
        rels,
        torch.stack(images)[:, None, :],
        torch.ones(m, 1, dtype=torch.bool),
        torch.zeros(m, 1, text_dim),
        torch.ones(m, 1, dtype=torch.bool),
        pooled,
    )
    emb = text.encode_texts(list(CONCEPTS)).pooled
    class_emb = {c: torch.nn.functional.normalize(emb[i], dim=-1) for i, c in enumerate(CONCEPTS)}
    return list(CONCEPTS[:n_seen]), list(CONCEPTS[n_seen:]), class_emb, feats
