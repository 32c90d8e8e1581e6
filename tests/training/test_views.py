"""Dihedral views in training: one view per sample in training batches, all views averaged at test."""

from __future__ import annotations

import dataclasses

import torch

from skyfuse.models import FusionConfig, create_model
from skyfuse.training.data import TensorBatches, TensorSet
from skyfuse.training.evaluate import predict_logits
from tests.training.helpers import toy_set


def _with_views(data: TensorSet, v: int = 4) -> TensorSet:
    g = torch.Generator().manual_seed(9)
    views = torch.stack(
        [data.image_tokens]
        + [
            data.image_tokens + torch.randn(data.image_tokens.shape, generator=g).half()
            for _ in range(v - 1)
        ]
    )
    return dataclasses.replace(data, image_tokens=views[0], views=views)


def test_training_batches_draw_one_view_per_sample_and_eval_uses_view_zero() -> None:
    data = _with_views(toy_set(40, 0))
    batches = TensorBatches(data, 40, shuffle=False, augment=True, seed=3)
    seen = next(iter(batches))["image_tokens"]
    picks = []
    for i in range(len(data)):
        match = [v for v in range(4) if torch.equal(seen[i], data.views[v, i])]
        assert len(match) == 1
        picks.append(match[0])
    assert len(set(picks)) == 4  # several views drawn, per sample
    second = next(iter(batches))["image_tokens"]
    assert not torch.equal(seen, second)  # a new draw each epoch
    plain = next(iter(TensorBatches(data, 40, shuffle=False)))["image_tokens"]
    assert torch.equal(plain, data.image_tokens)


def test_predict_averages_the_probabilities_of_every_view() -> None:
    data = _with_views(toy_set(12, 1), v=2)
    torch.manual_seed(0)
    model = create_model(
        FusionConfig(model="concat", image_dim=16, text_dim=8, num_classes=3, width=8, heads=2)
    ).eval()
    got = predict_logits(model, data).softmax(-1)
    single = [
        predict_logits(model, dataclasses.replace(data, image_tokens=data.views[v], views=None))
        for v in range(2)
    ]
    expected = torch.stack([s.softmax(-1) for s in single]).mean(0)
    torch.testing.assert_close(got, expected)


def test_concat_keeps_views_aligned() -> None:
    a, b = _with_views(toy_set(5, 2)), _with_views(toy_set(3, 3))
    both = TensorSet.concat([a, b])
    assert both.views is not None and both.views.shape[:2] == (4, 8)
    torch.testing.assert_close(both.views[2, 6], b.views[2, 1])
    assert torch.equal(both.image_tokens, both.views[0])
