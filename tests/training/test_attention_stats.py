"""Attention entropy relative to uniform: 1.0 for uniform weights, lower when attention picks keys."""

from __future__ import annotations

import torch

from skyfuse.models import FusionConfig, create_model
from skyfuse.models.layers import Attention
from skyfuse.training.attention_stats import attention_entropy
from tests.training.helpers import toy_set


def _dual(name: str = "dual"):
    torch.manual_seed(0)
    return create_model(
        FusionConfig(model=name, image_dim=16, text_dim=8, num_classes=3, width=8, heads=2)
    )


def test_uniform_attention_scores_one_and_sharp_attention_less() -> None:
    data = toy_set(20, 0)
    model = _dual()
    for mod in model.modules():  # zero queries: every key gets the same score
        if isinstance(mod, Attention):
            torch.nn.init.zeros_(mod.q.weight)
            torch.nn.init.zeros_(mod.q.bias)
    uniform = attention_entropy(model, data)
    assert set(uniform) == {"text->image", "image->text"}
    for v in uniform.values():
        assert abs(v - 1.0) < 1e-3
    for mod in model.modules():  # large random queries: attention concentrates on a few keys
        if isinstance(mod, Attention):
            torch.nn.init.normal_(mod.q.weight, std=30.0)
    sharp = attention_entropy(model, data)
    assert all(0.0 <= v < 0.9 for v in sharp.values())


def test_one_direction_models_and_pooled_models() -> None:
    data = toy_set(10, 1)
    assert set(attention_entropy(_dual("i2t"), data)) == {"image->text"}
    assert set(attention_entropy(_dual("t2i"), data)) == {"text->image"}
    assert attention_entropy(_dual("concat"), data) == {}
