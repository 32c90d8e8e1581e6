from __future__ import annotations

import math

import pytest
import torch

from skyfuse.zeroshot.metrics import (
    aggregate,
    gzsl_metrics,
    harmonic_mean,
    mean_std,
    per_class_topk,
    zsl_metrics,
)


def test_per_class_accuracy_weights_classes_equally() -> None:
    # class 0: 3 images all right; class 1: 1 image wrong -> per-class mean 0.5 (not 0.75)
    scores = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    labels = torch.tensor([0, 0, 0, 1])
    assert per_class_topk(scores, labels, 1) == pytest.approx(0.5)
    assert per_class_topk(scores, labels, 2) == pytest.approx(1.0)
    assert math.isnan(per_class_topk(scores[:0], labels[:0]))


def test_zsl_top5_caps_at_class_count() -> None:
    scores = torch.eye(3)[[2, 0, 1]]
    m = zsl_metrics(scores, torch.tensor([0, 1, 2]))
    assert m == {"top1": 0.0, "top5": 1.0}


def test_gzsl_seen_unseen_and_h() -> None:
    # 2 seen classes (0, 1), 1 unseen (2); unseen images are all mistaken for seen class 0
    scores = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [5.0, 0, 1.0], [0, 0, 5.0]])
    labels = torch.tensor([0, 1, 2, 2])
    m = gzsl_metrics(scores, labels, labels >= 2)
    assert m["seen"] == 1.0 and m["unseen"] == 0.5
    assert m["h"] == pytest.approx(2 * 0.5 / 1.5)
    assert harmonic_mean(0.0, 0.0) == 0.0


def test_mean_std_and_aggregate() -> None:
    s = mean_std([0.5, 0.7])
    assert s["mean"] == pytest.approx(0.6) and s["std"] == pytest.approx(math.sqrt(0.02))
    assert mean_std([0.3])["std"] == 0.0
    agg = aggregate([{"zsl": {"top1": 0.2}}, {"zsl": {"top1": 0.4}}])
    assert agg["zsl"]["top1"]["mean"] == pytest.approx(0.3)
    assert agg["zsl"]["top1"]["folds"] == [0.2, 0.4]
