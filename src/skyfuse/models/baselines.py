"""Baselines without cross-attention: `image`, `text` and `concat` (late fusion of pooled vectors).

Each pools its projected tokens over the real ones (masked mean), refines the pooled vector with one
pre-norm residual MLP (so the baselines are not starved of non-linearity against `dual`) and ends in the
shared head. `shortcut` has nothing to add here: the pooled projections already are the fused vector.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from skyfuse.models.base import FusionModel
from skyfuse.models.config import FusionConfig
from skyfuse.models.layers import MLP, masked_mean
from skyfuse.models.registry import register_model


class PooledFusion(FusionModel):
    """Masked-mean pooling of each used modality, concatenated, then a residual MLP."""

    def __init__(self, config: FusionConfig) -> None:
        super().__init__(config)
        self.norm = nn.LayerNorm(self.fused_dim)
        self.mlp = MLP(
            self.fused_dim, max(1, round(self.fused_dim * config.mlp_ratio)), config.dropout
        )

    def _fused_dim(self) -> int:
        return self.config.width * (int(self.uses_image) + int(self.uses_text))

    def encode(
        self,
        image: Tensor | None,
        image_mask: Tensor | None,
        text: Tensor | None,
        text_mask: Tensor | None,
        return_attention: bool,
    ) -> tuple[Tensor, dict[str, Tensor] | None]:
        parts = []
        if image is not None:
            parts.append(masked_mean(image, image_mask))
        if text is not None:
            parts.append(masked_mean(text, text_mask))
        fused = torch.cat(parts, dim=-1)
        fused = fused + self.mlp(self.norm(fused))
        return fused, ({} if return_attention else None)


@register_model("image")
class ImageOnly(PooledFusion):
    """Image tokens only; text inputs are ignored (None is accepted)."""

    uses_text = False


@register_model("text")
class TextOnly(PooledFusion):
    """Caption tokens only; image inputs are ignored (None is accepted)."""

    uses_image = False


@register_model("concat")
class ConcatFusion(PooledFusion):
    """Late fusion: pooled image and pooled text, concatenated."""
