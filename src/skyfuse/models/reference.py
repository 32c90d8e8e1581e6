"""PaperFusion: a re-creation of the published model's fusion compute, as a speed baseline.

Written from the description in ../shared/docs/paper.md (the published code has no licence; nothing is
copied). Same layers and shapes: image tokens projected 768 -> 512 once before the loop; per level, with
the same weights at every level: text self-attention (4 heads, width 512), text -> image cross-attention
(queries text, keys/values the projected image tokens), residual + LayerNorm, MLP 512 -> 1024 -> 512
(ReLU, dropout), image -> text cross-attention (queries the once-projected image tokens, never updated:
bug 5) projected back to 768, added to the image stream, LayerNorm; mean-pool both streams (no masks:
bug 2), concatenate (768 + 512 = 1280), one linear layer. Attention is ``nn.MultiheadAttention`` in
fp32 called the default way (attention weights are computed and averaged).

``seq_first_bug=True`` (default) reproduces the published misuse: the sequence-first self-attention is
handed batch-first tensors, so text tokens attend across the samples of the batch (bug 1). It is on by
default so the compute matches the published model; do not train on it. Use it for benchmarks only.
Where paper.md is silent (residual + LayerNorm after the self-attention and after the MLP, dropout 0.1)
we pick the usual transformer choice.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class PaperFusion(nn.Module):
    """The published fusion: forward(image_tokens (B, N, 768), text_tokens (B, L, 512)) -> logits."""

    def __init__(
        self,
        num_classes: int,
        image_dim: int = 768,
        text_dim: int = 512,
        heads: int = 4,
        levels: int = 2,
        mlp_hidden: int = 1024,
        dropout: float = 0.1,
        seq_first_bug: bool = True,
    ) -> None:
        super().__init__()
        self.levels = levels
        self.seq_first_bug = seq_first_bug
        self.image_to_text_width = nn.Linear(image_dim, text_dim)
        self.self_attn = nn.MultiheadAttention(
            text_dim, heads, dropout=dropout, batch_first=not seq_first_bug
        )
        self.norm_self = nn.LayerNorm(text_dim)
        self.t2i = nn.MultiheadAttention(text_dim, heads, dropout=dropout, batch_first=True)
        self.norm_t2i = nn.LayerNorm(text_dim)
        self.mlp = nn.Sequential(
            nn.Linear(text_dim, mlp_hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(mlp_hidden, text_dim),
        )
        self.norm_mlp = nn.LayerNorm(text_dim)
        self.i2t = nn.MultiheadAttention(text_dim, heads, dropout=dropout, batch_first=True)
        self.text_to_image_width = nn.Linear(text_dim, image_dim)
        self.norm_image = nn.LayerNorm(image_dim)
        self.classifier = nn.Linear(image_dim + text_dim, num_classes)

    def forward(self, image_tokens: Tensor, text_tokens: Tensor) -> Tensor:
        image = image_tokens
        text = text_tokens
        queries = self.image_to_text_width(image)  # projected once, reused at every level (bug 5)
        for _ in range(self.levels):
            # With seq_first_bug the layer reads (B, L, D) as (seq=B, batch=L, D): samples mix (bug 1).
            attended = self.self_attn(text, text, text)[0]
            text = self.norm_self(text + attended)
            attended = self.t2i(text, queries, queries)[0]
            text = self.norm_t2i(text + attended)
            text = self.norm_mlp(text + self.mlp(text))
            attended = self.i2t(queries, text, text)[0]
            image = self.norm_image(image + self.text_to_image_width(attended))
        fused = torch.cat([image.mean(dim=1), text.mean(dim=1)], dim=-1)
        return self.classifier(fused)
