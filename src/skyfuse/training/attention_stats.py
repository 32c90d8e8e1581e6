"""How far the cross-attention is from averaging: entropy of its weights relative to uniform.

Why: a cross-attention whose weights are nearly uniform over the caption's words (or the image's
regions) only averages them, and the pooled shortcut carries the decision; the maps `skyfuse explain`
draws then mean little. The ratio H / log(k) (k = the real keys a query may read) is 1.0 for uniform
attention and 0.0 for attention on one key; it is reported per direction beside the test accuracy.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from skyfuse.training.data import TensorSet
from skyfuse.training.module import model_inputs

#: attention names of the fusion models -> the direction they belong to
DIRECTIONS = {"t2i": "text->image", "i2t": "image->text"}


@torch.inference_mode()
def attention_entropy(
    model: nn.Module, data: TensorSet, *, batch_size: int = 128, max_rows: int = 2000
) -> dict[str, float]:
    """Mean relative entropy of each cross-attention direction over (at most ``max_rows`` of) ``data``.

    Returns ``{"text->image": r, "image->text": r}`` for the directions the model has (empty for
    models without cross-attention). Queries that are padding, or that can read a single key, are left
    out (their entropy says nothing).
    """
    was_training = model.training
    model.eval()
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    n = min(len(data), max_rows)
    for start in range(0, n, batch_size):
        batch = data.take(torch.arange(start, min(start + batch_size, n)))
        img, img_mask, txt, txt_mask = model_inputs(batch)
        out = model(img, img_mask, txt, txt_mask, return_attention=True)
        for name, w in (out.attention or {}).items():
            kind = name.rsplit(".", 1)[-1]
            if kind not in DIRECTIONS:
                continue
            q_mask, k_mask = (txt_mask, img_mask) if kind == "t2i" else (img_mask, txt_mask)
            k = k_mask.sum(dim=1).float()  # (B,)
            p = w.float().clamp_min(1e-12)
            ent = -(w.float() * p.log()).sum(-1).mean(1)  # (B, Lq), mean over heads
            rel = ent / k.clamp_min(2).log()[:, None]
            keep = q_mask & (k > 1)[:, None]
            sums[DIRECTIONS[kind]] += float(rel[keep].sum())
            counts[DIRECTIONS[kind]] += int(keep.sum())
    model.train(was_training)
    return {d: round(sums[d] / counts[d], 4) for d in sums if counts[d]}


__all__ = ["DIRECTIONS", "attention_entropy"]
