from __future__ import annotations

import pytest
import torch

from skyfuse.errors import BadInputError, ConfigError
from skyfuse.models import FusionConfig
from skyfuse.zeroshot.baselines import caption_only_scores
from skyfuse.zeroshot.folds import make_folds
from skyfuse.zeroshot.head import SemanticHead, semantic_fusion_config
from skyfuse.zeroshot.metrics import zsl_metrics
from skyfuse.zeroshot.task import HeadTrainConfig, ZeroShotData, score, train_semantic_head
from tests.zeroshot.fakes import linear_world


def _cfg(model: str = "dual", image_dim: int = 24, text_dim: int = 16) -> FusionConfig:
    return FusionConfig(
        model=model, image_dim=image_dim, text_dim=text_dim, num_classes=3, width=32, heads=2
    )


def test_semantic_config_outputs_sentence_space() -> None:
    assert semantic_fusion_config(_cfg()).num_classes == 16
    with pytest.raises(ValueError, match="sentence space"):
        from skyfuse.models import create_model

        SemanticHead(create_model(_cfg()))


def test_zero_projection_is_exactly_caption_only() -> None:
    torch.manual_seed(0)
    head = SemanticHead.build(_cfg(), init_gain=0.0, logit_scale=10.0).eval()
    b = 5
    image, text = torch.randn(b, 4, 24), torch.randn(b, 3, 16)
    cap, classes = torch.randn(b, 16), torch.randn(7, 16)
    logits = head(image, None, text, None, cap, classes)
    expected = 10.0 * caption_only_scores(cap, classes)
    assert torch.allclose(logits, expected, atol=1e-5)
    with pytest.raises(ValueError, match="caption_vec"):
        head(image, None, text, None, None, classes)


def test_scores_do_not_depend_on_batch_neighbours() -> None:
    torch.manual_seed(0)
    head = SemanticHead.build(_cfg(), init_gain=1.0).eval()
    image, text, cap = torch.randn(6, 4, 24), torch.randn(6, 3, 16), torch.randn(6, 16)
    mask = torch.ones(6, 3, dtype=torch.bool)
    mask[2, 1:] = False
    classes = torch.randn(4, 16)
    full = head(image, None, text, mask, cap, classes)
    one = head(image[2:3], None, text[2:3, :1], mask[2:3, :1], cap[2:3], classes)
    assert torch.allclose(full[2:3], one, atol=1e-5)


def test_head_generalises_to_unseen_classes_in_a_linear_world() -> None:
    classes, emb, feats = linear_world()
    fold = make_folds(
        {c: [r for r in feats.rels if r.startswith(c)] for c in classes}, unseen=0.34, folds=1
    )[0]
    index = {c: i for i, c in enumerate(classes)}
    e_seen = emb[[index[c] for c in fold.seen]]
    e_unseen = emb[[index[c] for c in fold.unseen]]
    train = ZeroShotData.from_features(feats, fold.train, fold.seen)
    val = ZeroShotData.from_features(feats, fold.val, fold.seen)
    test = ZeroShotData.from_features(feats, fold.test_unseen, fold.unseen)
    cfg = HeadTrainConfig(epochs=10, lr=5e-3, init_gain=1.0, batch_size=32, patience=10)
    head, history = train_semantic_head(_cfg("image"), train, val, e_seen, cfg)
    assert not head.caption_residual  # the image model does not read captions
    assert history and history[-1]["val_acc"] > 0.9
    acc = zsl_metrics(score(head, test, e_unseen), test.labels)["top1"]
    caption_acc = zsl_metrics(caption_only_scores(test.caption_vec, e_unseen), test.labels)["top1"]
    assert acc > 0.8 > caption_acc + 0.3, (acc, caption_acc)


def test_zero_shot_data_errors() -> None:
    classes, _, feats = linear_world(n_classes=3, per_class=2)
    with pytest.raises(BadInputError, match="no features"):
        ZeroShotData.from_features(feats, ["k00/missing.png"], classes)
    with pytest.raises(BadInputError, match="not among"):
        ZeroShotData.from_features(feats, ["k02/0.png"], classes[:2])
    with pytest.raises(ConfigError, match="epochs"):
        HeadTrainConfig(epochs=0)
