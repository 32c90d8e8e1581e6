"""Sentence-mean caption vectors and the caption-side maps (fast, offline, fake encoders)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from skyfuse.errors import ConfigError
from skyfuse.zeroshot import aligned as al
from skyfuse.zeroshot.folds import make_folds
from skyfuse.zeroshot.protocol import ZeroShotSettings, run_fold
from skyfuse.zeroshot.sentences import sentence_mean_vectors, split_sentences
from tests.zeroshot.fakes import BagOfWordsText, linear_world


def test_split_sentences() -> None:
    assert split_sentences("Many planes. A long runway!  Is it busy? yes") == [
        "Many planes.",
        "A long runway!",
        "Is it busy?",
        "yes",
    ]
    assert split_sentences("one sentence without a stop") == ["one sentence without a stop"]
    assert split_sentences("3.5 m wide road.") == ["3.5 m wide road."]
    assert split_sentences("") == [""]


def test_sentence_mean_is_the_mean_of_normalised_sentence_vectors() -> None:
    enc = BagOfWordsText(dim=16)
    caps = ["red roofs. green trees.", "green trees.", "water"]
    got = sentence_mean_vectors(caps, enc)
    one = F.normalize(enc.encode_texts(["red roofs.", "green trees.", "water"]).pooled, dim=-1)
    want = F.normalize(torch.stack([one[0] + one[1], one[1], one[2]]), dim=-1)
    assert torch.allclose(got, want, atol=1e-6)
    # a one-sentence caption gives the caption's own (normalised) vector
    assert torch.allclose(got[2], F.normalize(enc.encode_texts(["water"]).pooled[0], dim=-1))


def test_caption_only_baseline_keeps_the_joined_caption_vector() -> None:
    """Sentence vectors change the trained candidates' input, never the baseline."""
    classes, emb, feats = linear_world(n_classes=8, per_class=10)
    rels_by_class = {c: [r for r in feats.rels if r.startswith(c + "/")] for c in classes}
    fold = make_folds(rels_by_class, unseen=0.25, folds=1, seed=0)[0]
    class_emb = {c: emb[i] for i, c in enumerate(classes)}
    fast = al.AlignConfig(
        epochs=(2,), caption_weights=(0.0,), temperatures=(0.1,), alphas=(0.5,), text_weights=(0.0,)
    )
    settings = ZeroShotSettings(align=fast)
    plain, _ = run_fold(feats, fold, class_emb, settings)
    noise = F.normalize(
        torch.randn(feats.text_pooled.shape, generator=torch.Generator().manual_seed(1)), dim=-1
    )
    other, _ = run_fold(feats, fold, class_emb, settings, caption_vectors=noise)
    assert other["caption_only"] == plain["caption_only"]
    assert other[al.ENSEMBLE] != plain[al.ENSEMBLE]


def test_softmax_text_map_learns_the_class_directions() -> None:
    """Captions whose class lies along a direction the class embeddings share: the softmax map,
    started at the identity, improves the training-class accuracy of the plain caption score."""
    g = torch.Generator().manual_seed(0)
    emb = F.normalize(torch.randn(4, 12, generator=g), dim=-1)
    labels = torch.arange(4).repeat_interleave(30)
    shared = torch.randn(12, generator=g)
    caps = 0.4 * emb[labels] + shared + 0.3 * torch.randn(len(labels), 12, generator=g)
    cfg = al.AlignConfig(text_steps=200, text_lr=1e-2)
    base = (al.caption_scores(caps, emb).argmax(1) == labels).float().mean()
    for kind in al.TEXT_MAPS:
        tmap = al.fit_text_map(caps, labels, emb, 1.0, kind, cfg)
        assert tmap.shape == (12, 12)
        acc = (al.text_scores(caps, tmap, emb).argmax(1) == labels).float().mean()
        assert acc > base
    zero = al.fit_text_map(
        caps, labels, emb, 1.0, "softmax", cfg.model_copy(update={"text_steps": 1, "text_lr": 1e-9})
    )
    assert torch.allclose(zero, torch.eye(12), atol=1e-6)
    with pytest.raises(ConfigError, match="caption-side map"):
        al.fit_text_map(caps, labels, emb, 1.0, "mlp")
