"""Encoder protocols: every encoder returns token sequences, a padding mask and a pooled vector.

Why tokens and not only pooled vectors: the dual cross-attention model attends over image regions and
caption words, so encoders hand over the whole sequence; `pooled` serves the baselines and probes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from PIL import Image

from skyfuse.data.preprocess import ImagePreprocess

__all__ = ["ImageEncoder", "ImagePreprocess", "TextEncoder", "TokenBatch"]


@dataclass
class TokenBatch:
    """Encoder output for a batch.

    tokens: (B, N, D) float; mask: (B, N) bool, True where the token is real (False = padding);
    pooled: (B, D) float, the encoder's own summary (CLS / pooler / masked mean).
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TokenBatch:
        return TokenBatch(
            self.tokens.to(device=device, dtype=dtype),
            self.mask.to(device=device),
            self.pooled.to(device=device, dtype=dtype),
        )


@runtime_checkable
class ImageEncoder(Protocol):
    """Maps a batch of preprocessed pixels (B, 3, H, W) to image tokens."""

    encoder_id: str
    dim: int
    preprocess_cfg: ImagePreprocess
    frozen: bool

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor: ...

    def encode(self, pixels: torch.Tensor) -> TokenBatch: ...


@runtime_checkable
class TextEncoder(Protocol):
    """Maps captions to text tokens; tokenisation is part of the encoder."""

    encoder_id: str
    dim: int
    max_length: int
    frozen: bool

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]: ...

    def encode(self, batch: dict[str, torch.Tensor]) -> TokenBatch: ...

    def encode_texts(self, texts: Sequence[str]) -> TokenBatch: ...
