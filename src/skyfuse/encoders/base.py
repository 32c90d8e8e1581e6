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


@dataclass(frozen=True)
class ImagePreprocess:
    """Preprocessing that travels with an image encoder (never hard-coded elsewhere).

    resize_mode: "shorter" (resize the shorter side to `size`, then centre-crop) or "exact" (squash to
    size x size, as Hugging Face ViT processors do); interpolation: "bilinear" or "bicubic".
    """

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_mode: str = "shorter"
    interpolation: str = "bilinear"

    def describe(self) -> str:
        """A short stable string, part of the encoder id (preprocessing changes the features)."""
        mean = ",".join(f"{v:g}" for v in self.mean)
        std = ",".join(f"{v:g}" for v in self.std)
        interp = "" if self.interpolation == "bilinear" else f"-{self.interpolation}"
        return f"{self.size}{self.resize_mode[0]}-m{mean}-s{std}{interp}"


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
