from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from skyfuse.errors import BadInputError, CheckpointError
from skyfuse.models import FusionConfig
from skyfuse.training.bundle import load_bundle, save_bundle
from skyfuse.zeroshot.classes import ClassSpec
from skyfuse.zeroshot.head import SemanticHead
from skyfuse.zeroshot.model import is_zeroshot_bundle, load_zeroshot_model, save_zeroshot_model
from tests.zeroshot.fakes import BagOfWordsText, MeanColourImage


def _images() -> list[Image.Image]:
    return [Image.new("RGB", (20, 20), c) for c in ((200, 30, 30), (20, 160, 40), (30, 30, 220))]


def _head(model: str = "dual") -> SemanticHead:
    torch.manual_seed(0)
    cfg = FusionConfig(model=model, image_dim=8, text_dim=16, num_classes=2, width=16, heads=2)
    head = SemanticHead.build(cfg, init_gain=1.0, logit_scale=7.5)
    with torch.no_grad():
        head.residual_weight.fill_(0.6)
    return head.eval()


def test_round_trip_scores_identically(tmp_path: Path) -> None:
    head = _head()
    specs = [ClassSpec("red roofs", "red roofs", ("red buildings.",))]
    out = save_zeroshot_model(
        tmp_path / "zs",
        head,
        seen_classes=["red roofs", "forest"],
        unseen_classes=["water"],
        image_encoder="fake-colour",
        text_encoder="fake-bow",
        specs=specs,
        templates=["{} seen from above."],
        extra={"fold": 0},
    )
    assert is_zeroshot_bundle(out) and not is_zeroshot_bundle(tmp_path)
    kw = {"image_encoder": MeanColourImage(), "text_encoder": BagOfWordsText()}
    zs = load_zeroshot_model(out, **kw)
    assert zs.meta["fold"] == 0 and zs.templates == ["{} seen from above."]
    assert zs.class_names == ["red roofs", "forest", "water"]
    assert zs.class_specs(["red roofs"])[0].descriptions == ("red buildings.",)
    assert zs.head.scale.item() == pytest.approx(
        7.5
    ) and zs.head.residual_weight.item() == pytest.approx(0.6)
    caps = ["red roof", "green trees", "blue water"]
    names = ["red roofs", "helipad", "water"]
    ref = load_zeroshot_model(out, **kw)
    ref.head.load_state_dict(head.state_dict())
    assert torch.allclose(zs.scores(_images(), caps, names), ref.scores(_images(), caps, names))
    preds = zs.predict(_images(), caps, names, top_k=2)
    assert len(preds) == 3 and all(len(p) == 2 for p in preds)
    assert all(p[0][1] >= p[1][1] for p in preds)
    assert all(name in names for p in preds for name, _ in p)
    default = zs.predict(_images()[:1], caps[:1], top_k=10)
    assert {n for n, _ in default[0]} == set(zs.class_names)
    # the plain bundle loader reads it too: the head outputs the sentence space
    assert load_bundle(out).config.num_classes == 16


def test_captions_required_when_the_model_reads_them(tmp_path: Path) -> None:
    out = save_zeroshot_model(
        tmp_path / "zs", _head(), seen_classes=["a", "b"], image_encoder="x", text_encoder="y"
    )
    zs = load_zeroshot_model(out, image_encoder=MeanColourImage(), text_encoder=BagOfWordsText())
    with pytest.raises(BadInputError, match="reads captions"):
        zs.predict(_images(), None, ["a"])
    with pytest.raises(BadInputError, match="one per image"):
        zs.predict(_images(), ["x"], ["a"])
    with pytest.raises(BadInputError, match="no class names"):
        zs.scores(_images(), ["x"] * 3, [])


def test_image_model_needs_no_captions(tmp_path: Path) -> None:
    head = SemanticHead(_head("image").fusion, caption_residual=False)
    out = save_zeroshot_model(
        tmp_path / "zs", head, seen_classes=["a", "b"], image_encoder="x", text_encoder="y"
    )
    zs = load_zeroshot_model(out, image_encoder=MeanColourImage(), text_encoder=BagOfWordsText())
    assert not zs.needs_captions
    assert len(zs.predict(_images(), None, ["water", "forest"], top_k=1)) == 3


def test_classification_bundle_is_refused(tmp_path: Path) -> None:
    from skyfuse.models import create_model

    cfg = FusionConfig(model="image", image_dim=8, text_dim=16, num_classes=2, width=16, heads=2)
    save_bundle(
        tmp_path / "clf",
        create_model(cfg),
        cfg,
        class_names=["a", "b"],
        image_encoder="x",
        text_encoder="y",
    )
    assert not is_zeroshot_bundle(tmp_path / "clf")
    with pytest.raises(CheckpointError, match="not a zero-shot"):
        load_zeroshot_model(tmp_path / "clf")


def test_encoder_mismatch_is_reported(tmp_path: Path) -> None:
    out = save_zeroshot_model(
        tmp_path / "zs",
        _head(),
        seen_classes=["a", "b"],
        image_encoder="efficientnet-lite0",
        text_encoder="fake-bow",
        image_encoder_id="efficientnet-lite0@other",
        text_encoder_id="other",
    )
    with pytest.raises(CheckpointError, match="text encoder 'other' but 'fake-bow'"):
        load_zeroshot_model(out, text_encoder=BagOfWordsText())
