"""Dual cross-attention fusion (`dual`) and its one-direction ablations (`t2i`, `i2t`).

One level, pre-norm residual (x + f(LayerNorm(x))), chosen over the paper's post-norm because it trains
stably without warm-up at any depth:

1. text self-attention              txt += SelfAttn(txt)                    (text path)
2. text -> image cross-attention     txt += Attn(q=txt, kv=img)              (text path)
3. MLP on the text                   txt += MLP(txt)                         (text path)
4. image -> text cross-attention     img += Attn(q=img, kv=txt)              (image path)

Unlike the published code, the image stream is updated at every level and the next level's queries and
keys read the updated stream (paper bug 5); attention is per sample (bug 1) with padding masks (bug 2).
After the last level both streams are normalised and mean-pooled over their real tokens; `shortcut`
appends the pooled input projections of the streams that were attended, so the head can fall back on
them. `t2i` keeps only the text path, `i2t` only the image path: the paper's ablation.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from skyfuse.models.base import FusionModel
from skyfuse.models.config import FusionConfig
from skyfuse.models.layers import MLP, Attention, SelfAttention, masked_mean
from skyfuse.models.registry import register_model


class FusionBlock(nn.Module):
    """One fusion level; `text_path` / `image_path` switch the two directions on or off.

    Dropout acts on the residual branches and inside the MLP, not on attention probabilities: dropping
    probabilities forces PyTorch's unfused attention on CPU (a paper-size training step measured ~8 %
    slower with it), and residual dropout regularises as well.
    """

    def __init__(
        self, width: int, heads: int, hidden: int, dropout: float, text_path: bool, image_path: bool
    ) -> None:
        super().__init__()
        self.text_path = text_path
        self.image_path = image_path
        self.norm_image = nn.LayerNorm(width)
        self.drop = nn.Dropout(dropout)
        if text_path:
            self.norm_self = nn.LayerNorm(width)
            self.self_attn = SelfAttention(width, heads)
            self.norm_t2i = nn.LayerNorm(width)
            self.t2i = Attention(width, heads)
            self.norm_mlp = nn.LayerNorm(width)
            self.mlp = MLP(width, hidden, dropout)
        if image_path:
            self.norm_text_kv = nn.LayerNorm(width)
            self.i2t = Attention(width, heads)

    def forward(
        self,
        img: Tensor,
        img_mask: Tensor | None,
        txt: Tensor,
        txt_mask: Tensor | None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        weights: dict[str, Tensor] = {}
        img_n = self.norm_image(img)
        if self.text_path:
            h, w = self.self_attn(self.norm_self(txt), txt_mask, need_weights)
            txt = txt + self.drop(h)
            if w is not None:
                weights["text_self"] = w
            h, w = self.t2i(self.norm_t2i(txt), img_n, img_mask, need_weights)
            txt = txt + self.drop(h)
            if w is not None:
                weights["t2i"] = w
            txt = txt + self.mlp(self.norm_mlp(txt))
        if self.image_path:
            h, w = self.i2t(img_n, self.norm_text_kv(txt), txt_mask, need_weights)
            img = img + self.drop(h)
            if w is not None:
                weights["i2t"] = w
        return img, txt, weights


class CrossAttentionFusion(FusionModel):
    """Shared implementation of `dual`, `t2i` and `i2t`."""

    text_path: ClassVar[bool] = True
    image_path: ClassVar[bool] = True

    def __init__(self, config: FusionConfig) -> None:
        super().__init__(config)
        w = config.width
        n_blocks = 1 if config.shared_weights else config.levels
        self.blocks = nn.ModuleList(
            FusionBlock(
                w, config.heads, config.mlp_hidden, config.dropout, self.text_path, self.image_path
            )
            for _ in range(n_blocks)
        )
        self.final_norm_image = nn.LayerNorm(w) if self.image_path else None
        self.final_norm_text = nn.LayerNorm(w) if self.text_path else None

    def _fused_dim(self) -> int:
        w = self.config.width
        extra = (int(self.text_path) + int(self.image_path)) * w if self.config.shortcut else 0
        return 2 * w + extra

    def encode(
        self,
        image: Tensor | None,
        image_mask: Tensor | None,
        text: Tensor | None,
        text_mask: Tensor | None,
        return_attention: bool,
    ) -> tuple[Tensor, dict[str, Tensor] | None]:
        assert image is not None and text is not None
        img0 = masked_mean(image, image_mask)
        txt0 = masked_mean(text, text_mask)
        img, txt = image, text
        attention: dict[str, Tensor] = {}
        for level in range(self.config.levels):
            block = self.blocks[0 if self.config.shared_weights else level]
            img, txt, weights = block(img, image_mask, txt, text_mask, return_attention)
            attention.update({f"level{level}.{k}": v for k, v in weights.items()})
        if self.final_norm_image is not None:
            img = self.final_norm_image(img)
        if self.final_norm_text is not None:
            txt = self.final_norm_text(txt)
        parts = [masked_mean(img, image_mask), masked_mean(txt, text_mask)]
        if self.config.shortcut:
            if self.image_path:
                parts.append(img0)
            if self.text_path:
                parts.append(txt0)
        return torch.cat(parts, dim=-1), (attention if return_attention else None)


@register_model("dual")
class DualFusion(CrossAttentionFusion):
    """Both directions: text reads the image, then the image reads the refined text, every level."""


@register_model("t2i")
class TextToImageFusion(CrossAttentionFusion):
    """Text queries over image tokens only; the image stream stays its input projection."""

    image_path = False


@register_model("i2t")
class ImageToTextFusion(CrossAttentionFusion):
    """Image queries over text tokens only; the text stream stays its input projection."""

    text_path = False
