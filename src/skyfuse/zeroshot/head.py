"""The semantic head: fused vector -> the text encoder's sentence space -> cosine scores vs classes.

Why this design (each choice was measured, see docs/zeroshot.md):
- the projection *is* the fusion model's own head, built with ``num_classes = text_dim``, so a zero-shot
  model is an ordinary fusion bundle plus two scalars, and every fusion model works unchanged;
- the caption's pooled sentence vector is added residually (when the model reads text): the caption
  already lives in the class embeddings' space, and at initialisation the head reproduces the
  caption-only baseline exactly; training only has to learn what image and fusion add;
- the projection starts near zero (`init_gain`) so the first steps cannot destroy that starting point;
- logits are cosine similarities times a learned temperature (log-parametrised, clamped).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from skyfuse.models import FusionConfig, FusionModel, create_model

MAX_LOGIT_SCALE = 100.0


def semantic_fusion_config(base: FusionConfig) -> FusionConfig:
    """The same fusion settings with the head's output width set to the sentence space."""
    return FusionConfig.from_dict({**base.to_dict(), "num_classes": base.text_dim})


def _last_linear(module: nn.Module) -> nn.Linear | None:
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


class SemanticHead(nn.Module):
    """Scores samples against arbitrary class embeddings; nothing in it depends on the class count.

    Args:
        fusion: a FusionModel whose head outputs `text_dim` values (see `semantic_fusion_config`).
        caption_residual: add the caption's normalised pooled vector to the projection.
        logit_scale: initial temperature (multiplier of the cosines).
        init_gain: scale of the projection's initial weights (0 = start exactly at caption-only).
    """

    def __init__(
        self,
        fusion: FusionModel,
        *,
        caption_residual: bool = True,
        logit_scale: float = 20.0,
        init_gain: float = 0.05,
        residual_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if fusion.config.num_classes != fusion.config.text_dim:
            raise ValueError(
                f"the fusion head outputs {fusion.config.num_classes} values, the sentence space has"
                f" {fusion.config.text_dim}; build it with semantic_fusion_config()"
            )
        self.fusion = fusion
        self.caption_residual = caption_residual
        self.log_scale = nn.Parameter(torch.tensor(math.log(logit_scale)))
        self.residual_weight = nn.Parameter(torch.tensor(float(residual_weight)))
        last = _last_linear(fusion.head)
        if last is not None and init_gain != 1.0:
            with torch.no_grad():
                last.weight.mul_(init_gain)
                last.bias.zero_()

    @classmethod
    def build(cls, base: FusionConfig, **kw: float | bool) -> SemanticHead:
        """A fresh head for fusion settings `base` (its `num_classes` is ignored)."""
        return cls(create_model(semantic_fusion_config(base)), **kw)  # type: ignore[arg-type]

    @property
    def scale(self) -> Tensor:
        return self.log_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def embed(
        self,
        image_tokens: Tensor | None,
        image_mask: Tensor | None,
        text_tokens: Tensor | None,
        text_mask: Tensor | None,
        caption_vec: Tensor | None = None,
    ) -> Tensor:
        """(B, text_dim) L2-normalised vectors in the sentence space."""
        z = self.fusion(image_tokens, image_mask, text_tokens, text_mask).logits
        if self.caption_residual:
            if caption_vec is None:
                raise ValueError("this zero-shot head adds the caption vector; pass caption_vec")
            z = z + self.residual_weight * F.normalize(caption_vec.to(z.dtype), dim=-1)
        return F.normalize(z, dim=-1)

    def forward(
        self,
        image_tokens: Tensor | None,
        image_mask: Tensor | None,
        text_tokens: Tensor | None,
        text_mask: Tensor | None,
        caption_vec: Tensor | None,
        class_embeddings: Tensor,
    ) -> Tensor:
        """(B, C) logits: temperature x cosine against `class_embeddings` (C, text_dim)."""
        z = self.embed(image_tokens, image_mask, text_tokens, text_mask, caption_vec)
        return self.scale * z @ F.normalize(class_embeddings.to(z.dtype), dim=-1).T
