"""Building blocks: per-sample masked attention, the MLP, masked mean pooling.

Attention runs on ``F.scaled_dot_product_attention`` (fused kernels on CPU and GPU, boolean masks
supported) with tensors laid out (batch, heads, tokens, dim), so every sample attends only over its own
tokens (the published code mixed samples of a batch: paper bug 1). Padding keys are masked (bug 2).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def masked_mean(x: Tensor, mask: Tensor | None) -> Tensor:
    """Mean over real tokens of (B, N, D); rows without a real token give zeros, never NaN."""
    if mask is None:
        return x.mean(dim=1)
    m = mask.to(x.dtype).unsqueeze(-1)
    total = (x * m).sum(dim=1)
    count = m.sum(dim=1).clamp_min(1.0)
    return total / count


def prepare_mask(mask: Tensor | None, tokens: Tensor) -> Tensor | None:
    """Check a (B, N) bool mask against its tokens; None when every token is real (CPU only)."""
    if mask is None:
        return None
    if mask.shape != tokens.shape[:2]:
        raise ValueError(
            f"mask shape {tuple(mask.shape)} does not match tokens {tuple(tokens.shape)}"
        )
    mask = mask.to(device=tokens.device, dtype=torch.bool)
    # Dropping an all-true mask picks faster kernels, but reading the answer is a host sync on a GPU and
    # a graph break under torch.compile; there the masked kernel is cheaper than the sync.
    if tokens.device.type == "cpu" and not torch.compiler.is_compiling() and bool(mask.all()):
        return None
    return mask


def drop_tokens(tokens: Tensor | None, mask: Tensor | None, rate: float) -> Tensor | None:
    """Hide a random ``rate`` of each sample's real tokens (training only).

    With frozen features every epoch shows the model the same tokens; hiding a random subset is the
    only augmentation left, and it keeps attention from leaning on a few tokens. A sample keeps at
    least one real token: where the draw would hide them all, its mask is left as it was.
    """
    if tokens is None or rate <= 0:
        return mask
    real = (
        mask
        if mask is not None
        else torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
    )
    keep = real & (torch.rand(real.shape, device=tokens.device) >= rate)
    empty = ~keep.any(dim=1, keepdim=True)
    return torch.where(empty, real, keep)


def attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    key_mask: Tensor | None,
    dropout: float,
    need_weights: bool,
) -> tuple[Tensor, Tensor | None]:
    """Attention of (B, H, L, d) queries over (B, H, S, d) keys; returns (B, L, H*d) and weights.

    ``key_mask`` (B, S) is True for real keys. A sample with no real key gets a zero result (its queries
    have nothing to read), computed without NaN: its row attends over everything and is zeroed after.
    """
    b, _, lq, _ = q.shape
    attn_mask: Tensor | None = None
    has_key: Tensor | None = None
    if key_mask is not None:
        has_key = key_mask.any(dim=1)
        attn_mask = (key_mask | ~has_key[:, None])[:, None, None, :]
    weights: Tensor | None = None
    if need_weights:
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
        if attn_mask is not None:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        weights = scores.softmax(dim=-1)
        y = F.dropout(weights, dropout, dropout > 0) @ v
    else:
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout)
    if has_key is not None:
        keep = has_key.to(y.dtype)[:, None, None, None]
        y = y * keep
        if weights is not None:
            weights = weights * keep
    return y.transpose(1, 2).reshape(b, lq, -1), weights


class _MultiHead(nn.Module):
    """Head split and attention dropout shared by the attention layers below."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.head_dim = width // heads
        self.dropout = dropout


class Attention(_MultiHead):
    """Multi-head attention of queries over another sequence (cross-attention), one sample at a time."""

    def __init__(
        self, width: int, heads: int, dropout: float = 0.0, kv_width: int | None = None
    ) -> None:
        super().__init__(width, heads, dropout)
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(kv_width or width, 2 * width)
        self.out = nn.Linear(width, width)

    def forward(
        self,
        query: Tensor,
        context: Tensor,
        key_mask: Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        b, lq, _ = query.shape
        s = context.shape[1]
        q = self.q(query).view(b, lq, self.heads, self.head_dim).transpose(1, 2)
        kv = self.kv(context).view(b, s, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        y, weights = attend(q, kv[0], kv[1], key_mask, p, need_weights)
        return self.out(y), weights


class SelfAttention(_MultiHead):
    """Self-attention with one fused QKV projection (one matmul instead of two)."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__(width, heads, dropout)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(
        self, x: Tensor, key_mask: Tensor | None = None, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        b, n, _ = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        y, weights = attend(qkv[0], qkv[1], qkv[2], key_mask, p, need_weights)
        return self.out(y), weights


class MLP(nn.Sequential):
    """Linear -> GELU -> dropout -> Linear -> dropout, applied per token."""

    def __init__(self, width: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__(
            nn.Linear(width, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, width),
            nn.Dropout(dropout),
        )


class InputProjection(nn.Sequential):
    """LayerNorm then Linear: frozen encoders differ wildly in scale, so normalise before projecting."""

    def __init__(self, in_dim: int, width: int) -> None:
        super().__init__(nn.LayerNorm(in_dim), nn.Linear(in_dim, width))
