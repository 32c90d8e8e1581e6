"""FusionModel: the interface every fusion model and baseline shares.

All models take the same four tensors, project both modalities with the same input projection and end
in the same head, so a comparison between them measures the fusion and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from skyfuse.errors import BadInputError
from skyfuse.models.config import FusionConfig
from skyfuse.models.layers import InputProjection, drop_tokens, masked_mean, prepare_mask


@dataclass
class FusionOutput:
    """logits (B, C); fused (B, fused_dim), the vector the head reads; attention: name -> (B, H, Lq, Lk)
    weights when asked for (names like ``level0.t2i``), else None."""

    logits: Tensor
    fused: Tensor
    attention: dict[str, Tensor] | None = None


class FusionModel(nn.Module):
    """Base class: input projections, validation of inputs, the head. Subclasses implement `encode`.

    Inputs: image_tokens (B, N, image_dim), image_mask (B, N) bool, text_tokens (B, L, text_dim),
    text_mask (B, L) bool; True marks a real token, None means all real. Tokens may be fp16 (the feature
    cache); they are cast to the model's dtype. A model that ignores a modality accepts None for it.
    """

    uses_image: ClassVar[bool] = True
    uses_text: ClassVar[bool] = True

    def __init__(self, config: FusionConfig) -> None:
        super().__init__()
        self.config = config
        w = config.width
        self.image_proj = InputProjection(config.image_dim, w) if self.uses_image else None
        self.text_proj = InputProjection(config.text_dim, w) if self.uses_text else None
        self.fused_dim = self._fused_dim()
        self.head = nn.Sequential(
            nn.LayerNorm(self.fused_dim),
            nn.Dropout(config.dropout),
            nn.Linear(self.fused_dim, config.num_classes),
        )
        self.linear_image: nn.Module | None = None
        self.linear_text: nn.Module | None = None
        if config.linear_path:
            if self.uses_image:
                self.linear_image = _linear(config.image_dim, config.num_classes)
            if self.uses_text:
                self.linear_text = _linear(config.text_dim, config.num_classes)

    # -- to implement ------------------------------------------------------------------------------
    def _fused_dim(self) -> int:
        raise NotImplementedError

    def encode(
        self,
        image: Tensor | None,
        image_mask: Tensor | None,
        text: Tensor | None,
        text_mask: Tensor | None,
        return_attention: bool,
    ) -> tuple[Tensor, dict[str, Tensor] | None]:
        """Fuse projected (B, N, width) / (B, L, width) streams into (B, fused_dim)."""
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------------
    def _inputs(
        self,
        tokens: Tensor | None,
        mask: Tensor | None,
        proj: nn.Module | None,
        dim: int,
        what: str,
    ) -> tuple[Tensor | None, Tensor | None]:
        if proj is None:
            return None, None
        if tokens is None:
            raise BadInputError(
                f"model {self.config.model!r} needs {what} tokens; pass them or pick another model"
            )
        if tokens.dim() != 3 or tokens.shape[-1] != dim:
            raise BadInputError(
                f"{what} tokens have shape {tuple(tokens.shape)}, expected (B, N, {dim}); "
                f"the features do not match this model's {what} encoder"
            )
        try:
            mask = prepare_mask(mask, tokens)
        except ValueError as exc:
            raise BadInputError(f"{what} mask: {exc}") from None
        weight = next(proj.parameters())
        return proj(tokens.to(dtype=weight.dtype)), mask

    def forward(
        self,
        image_tokens: Tensor | None,
        image_mask: Tensor | None,
        text_tokens: Tensor | None,
        text_mask: Tensor | None,
        return_attention: bool = False,
    ) -> FusionOutput:
        if self.training and self.config.caption_dropout > 0 and text_tokens is not None:
            text_mask = hide_captions(text_tokens, text_mask, self.config.caption_dropout)
        fused, attention = self._embed(
            image_tokens, image_mask, text_tokens, text_mask, return_attention
        )
        logits = self.head(fused)
        if self.linear_image is not None and image_tokens is not None:
            logits = logits + self.linear_image(_pooled(image_tokens, image_mask, logits.dtype))
        if self.linear_text is not None and text_tokens is not None:
            logits = logits + self.linear_text(_pooled(text_tokens, text_mask, logits.dtype))
        return FusionOutput(logits, fused, attention)

    def embed(
        self,
        image_tokens: Tensor | None,
        image_mask: Tensor | None,
        text_tokens: Tensor | None,
        text_mask: Tensor | None,
    ) -> Tensor:
        """The fused vector (B, fused_dim) without the head: for probes, zero-shot heads and t-SNE."""
        return self._embed(image_tokens, image_mask, text_tokens, text_mask, False)[0]

    def _embed(
        self,
        image_tokens: Tensor | None,
        image_mask: Tensor | None,
        text_tokens: Tensor | None,
        text_mask: Tensor | None,
        return_attention: bool,
    ) -> tuple[Tensor, dict[str, Tensor] | None]:
        cfg = self.config
        image, image_mask = self._inputs(
            image_tokens, image_mask, self.image_proj, cfg.image_dim, "image"
        )
        text, text_mask = self._inputs(text_tokens, text_mask, self.text_proj, cfg.text_dim, "text")
        if self.training and cfg.token_drop > 0:
            image_mask = drop_tokens(image, image_mask, cfg.token_drop)
            text_mask = drop_tokens(text, text_mask, cfg.token_drop)
        if image is not None and text is not None and image.shape[0] != text.shape[0]:
            raise BadInputError(
                f"batch sizes differ: {image.shape[0]} images, {text.shape[0]} texts"
            )
        return self.encode(image, image_mask, text, text_mask, return_attention)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return f"model={self.config.model!r}, fused_dim={self.fused_dim}"


def _linear(dim: int, classes: int) -> nn.Module:
    """The probe's map: normalised pooled vector -> class scores."""
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, classes))


def _pooled(tokens: Tensor, mask: Tensor | None, dtype: torch.dtype) -> Tensor:
    """Masked mean of the raw input tokens (a sample without a real token pools to zeros)."""
    return masked_mean(tokens.to(dtype), mask.bool() if mask is not None else None)


def hide_captions(tokens: Tensor, mask: Tensor | None, rate: float) -> Tensor:
    """Hide every token of a random ``rate`` of the samples (caption dropout, training only).

    A hidden caption is an all-False mask, which every model reads as "no caption": pooling gives
    zeros and attention over it adds nothing; the same mask serves image-only prediction.
    """
    real = (
        mask.bool()
        if mask is not None
        else torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
    )
    drop = torch.rand(real.shape[0], 1, device=tokens.device) < rate
    return real & ~drop


__all__ = ["FusionModel", "FusionOutput", "hide_captions"]
