"""The aligned zero-shot candidates: class-disjoint validation, calibration, transfer through captions."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from skyfuse.errors import ConfigError
from skyfuse.zeroshot import aligned as al
from skyfuse.zeroshot.folds import make_folds
from skyfuse.zeroshot.metrics import per_class_topk
from skyfuse.zeroshot.protocol import ZeroShotSettings, run_fold
from tests.zeroshot.fakes import BagOfWordsText, MeanColourImage, concept_world, linear_world

FAST = al.AlignConfig(
    epochs=(5, 15),
    caption_weights=(0.0, 1.0),
    temperatures=(0.1,),
    alphas=(0.5, 1.0),
    gammas=(0.0, 0.1, 0.2, 0.4),
    lr=5e-3,
    batch_size=32,
)


def _world_folds(folds: int = 3) -> tuple[list[str], dict[str, torch.Tensor], object, list]:
    classes, emb, feats = linear_world(n_classes=12, per_class=20)
    rels_by_class = {c: [r for r in feats.rels if r.startswith(c + "/")] for c in classes}
    class_emb = {c: emb[i] for i, c in enumerate(classes)}
    return classes, class_emb, feats, make_folds(rels_by_class, unseen=0.25, folds=folds, seed=0)


def test_validation_classes_are_seen_classes_of_every_fold() -> None:
    _, class_emb, feats, folds = _world_folds(folds=4)
    settings = ZeroShotSettings(align=FAST)
    for fold in folds:
        for cfg in (FAST, FAST.model_copy(update={"inner_splits": 5, "val_classes": 0.5})):
            splits = al.inner_class_splits(fold.seen, cfg, seed=fold.index)
            assert len(splits) == cfg.inner_splits
            for train_cls, val_cls in splits:
                assert val_cls and set(val_cls) <= set(fold.seen)
                assert not set(val_cls) & set(fold.unseen)
                assert set(train_cls) | set(val_cls) == set(fold.seen)
                assert not set(train_cls) & set(val_cls)
        res, _ = run_fold(feats, fold, class_emb, settings)
        used = {c for split in res["selection"]["val_classes"] for c in split}
        assert used and used <= set(fold.seen) and not used & set(fold.unseen)
    with pytest.raises(ConfigError, match="seen classes"):
        al.inner_class_splits(["a", "b"], FAST, seed=0)


def test_choices_depend_on_validation_classes_only() -> None:
    """Scrambling every test image (seen and unseen) changes the test numbers, never a choice."""
    _, class_emb, feats, folds = _world_folds(folds=2)
    settings = ZeroShotSettings(align=FAST)
    fold = folds[0]
    test = set(fold.test_seen) | set(fold.test_unseen)
    rows = torch.tensor([r in test for r in feats.rels])
    g = torch.Generator().manual_seed(1)
    scrambled = dataclasses.replace(
        feats,
        image_tokens=torch.where(
            rows[:, None, None],
            torch.randn(feats.image_tokens.shape, generator=g),
            feats.image_tokens.float(),
        ),
        text_pooled=torch.where(
            rows[:, None], torch.randn(feats.text_pooled.shape, generator=g), feats.text_pooled
        ),
    )
    a, _ = run_fold(feats, fold, class_emb, settings)
    b, _ = run_fold(scrambled, fold, class_emb, settings)
    assert a["selection"] == b["selection"]
    assert a["aligned"]["zsl"]["top1"] != b["aligned"]["zsl"]["top1"]
    # and the choice is sensitive to what the validation classes show: drop their images' signal
    val_cls = {c for split in a["selection"]["val_classes"] for c in split}
    hit = torch.tensor([r.split("/")[0] in val_cls and r not in test for r in feats.rels])
    blind = dataclasses.replace(
        feats,
        image_tokens=torch.where(
            hit[:, None, None],
            torch.randn(feats.image_tokens.shape, generator=g),
            feats.image_tokens.float(),
        ),
    )
    c, _ = run_fold(blind, fold, class_emb, settings)
    assert c["selection"]["choices"] != a["selection"]["choices"]


def test_gamma_is_the_validation_optimum() -> None:
    """gamma maximises the generalised H on the validation splits (recomputed here by hand)."""
    _, class_emb, feats, folds = _world_folds(folds=1)
    fold = folds[0]
    rows = al.PooledRows.from_features(feats, fold.train + fold.val, fold.seen)
    holdout = al.holdout_mask(rows, fold.val)
    choices, _ = al.select(rows, holdout, fold.seen, class_emb, FAST, seed=0)
    splits = al.validation_splits(rows, holdout, fold.seen, class_emb, FAST, seed=0)
    ch = choices[al.ENSEMBLE]
    key = (ch.caption_weight, ch.temperature, ch.epochs)

    def h(gamma: float) -> float:
        vals = []
        for s in splits:
            cap = s.caption[ch.centre_caption]
            text = s.text[(ch.centre_caption, ch.text_map)][1] if ch.text_weight else None
            scores = al.calibrate(
                al.combine(s.image[key][1], cap[1], ch.alpha, text, ch.text_weight),
                len(s.train_classes),
                gamma,
            )
            vals.append(al._gzsl_h(scores, s.gzsl_labels, s.gzsl_unseen))
        return sum(vals) / len(vals)

    assert h(ch.gamma) == pytest.approx(ch.val_h)
    assert all(h(g) <= ch.val_h + 1e-9 for g in FAST.gammas)


def test_caption_alignment_transfers_a_concept_no_class_name_has() -> None:
    seen, unseen, class_emb, feats = concept_world()
    train = al.PooledRows.from_features(
        feats, [r for r in feats.rels if r.split("/")[0] in seen], seen
    )
    test = al.PooledRows.from_features(
        feats, [r for r in feats.rels if r.split("/")[0] in unseen], unseen
    )
    e_seen = torch.stack([class_emb[c] for c in seen])
    e_unseen = torch.stack([class_emb[c] for c in unseen])
    cfg = FAST.model_copy(update={"epochs": (30,)})
    acc = {}
    for cw in (0.0, 1.0):
        model, _ = al.train_map(train, e_seen, caption_weight=cw, temperature=0.1, cfg=cfg, seed=0)
        acc[cw] = per_class_topk(al.image_scores(model, test, e_unseen, False), test.labels)
    # chance is 1/4; aligned to captions, the image side names unseen concepts it never saw as a class
    assert acc[1.0] > 0.8 and acc[1.0] > acc[0.0] + 0.3, acc
    # and class-disjoint validation finds that out by itself (validation classes are seen ones)
    choices, _ = al.select(
        train, torch.zeros(len(train), dtype=torch.bool), seen, class_emb, FAST, seed=0
    )
    assert choices[al.ALIGNED].caption_weight == 1.0


def test_scorer_round_trip_and_calibrated_prediction(tmp_path: Path) -> None:
    from PIL import Image

    from skyfuse.zeroshot.model import is_zeroshot_bundle, load_zeroshot_model, save_zeroshot_model

    torch.manual_seed(0)
    image_map = al.AlignedMap(8, 16)
    choice = al.Choice(0.5, 0.1, 5, 0.6, True, 0.3, 0.7, 0.6, text_weight=0.2)
    scorer = al.AlignedScorer(image_map, torch.randn(16), choice, text_map=torch.randn(16, 16))
    out = save_zeroshot_model(
        tmp_path / "zs",
        scorer,
        seen_classes=["red roofs", "forest"],
        image_encoder="fake-colour",
        text_encoder="fake-bow",
        extra={"method": al.ENSEMBLE},
    )
    assert is_zeroshot_bundle(out)
    kw = {"image_encoder": MeanColourImage(), "text_encoder": BagOfWordsText()}
    zs = load_zeroshot_model(out, **kw)
    assert zs.method == al.ENSEMBLE and zs.head.choice == choice and zs.needs_captions
    images = [Image.new("RGB", (20, 20), c) for c in ((200, 30, 30), (20, 160, 40))]
    caps = ["red roof", "green trees"]
    names = ["forest", "water", "red roofs"]
    got = zs.scores(images, caps, names)
    # by hand: the same ensemble, the two trained-on names lose gamma, over the temperature
    enc_i, enc_t = kw["image_encoder"], kw["text_encoder"]
    pooled = enc_i.encode(enc_i.preprocess(images)).pooled
    cap = enc_t.encode_texts(caps).pooled
    classes = zs.class_embeddings(names)
    plain = scorer.scores(pooled, cap, classes)
    expected = plain.clone()
    expected[:, [0, 2]] -= 0.3
    assert torch.allclose(got, expected / 0.1, atol=1e-5)
    top = zs.predict(images, caps, names, top_k=3)
    assert [n for n, _ in top[0]] == [names[i] for i in got[0].argsort(descending=True).tolist()]
    with pytest.raises(Exception, match="captions"):
        zs.scores(images, None, names)
