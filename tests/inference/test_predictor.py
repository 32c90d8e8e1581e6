from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from skyfuse.errors import BadInputError, ConfigError
from skyfuse.inference import Predictor
from skyfuse.reports.attention import region_heatmap, word_weights
from tests.inference.helpers import CLASSES, encoders, make_bundle, make_predictor, random_image


@pytest.fixture(scope="module")
def predictor(bundle_dir: Path):  # type: ignore[no-untyped-def]
    return make_predictor(bundle_dir, batch_size=3)


def test_top_k_sorted_and_labelled(predictor) -> None:  # type: ignore[no-untyped-def]
    images = [random_image(seed=i) for i in range(4)]
    preds = predictor.predict(images, ["a sandy shore by blue water"] * 4, top_k=3)
    assert len(preds) == 4
    for p in preds:
        assert [t.label for t in p.top_k] == [t.label for t in p.top_k if t.label in CLASSES]
        probs = [t.prob for t in p.top_k]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True)
        assert 0.0 < sum(probs) <= 1.0 + 1e-6
        assert p.caption == "a sandy shore by blue water"
    # k larger than the class count is clipped; full distribution sums to one
    full = predictor.predict(images[:1], ["x"], top_k=50)[0]
    assert len(full.top_k) == len(CLASSES)
    assert sum(t.prob for t in full.top_k) == pytest.approx(1.0, abs=1e-5)


def test_prediction_does_not_depend_on_batch(predictor) -> None:  # type: ignore[no-untyped-def]
    images = [random_image(seed=10 + i) for i in range(5)]
    caps = [f"caption number {i} with {'many ' * i}words" for i in range(5)]
    alone = predictor.forward(images[2:3], caps[2:3])[0]
    together = predictor.forward(images, caps)[0]
    torch.testing.assert_close(alone[0], together[2], atol=1e-5, rtol=1e-4)


def test_captions_generated_when_absent(predictor) -> None:  # type: ignore[no-untyped-def]
    preds = predictor.predict([random_image(seed=3), random_image(seed=4)], None, top_k=2)
    assert all(isinstance(p.caption, str) and len(p.caption.split()) >= 3 for p in preds)


def test_explanation_shapes(predictor) -> None:  # type: ignore[no-untyped-def]
    cap = "green trees around a small lake"
    pred = predictor.predict([random_image(seed=5)], [cap], top_k=2, explain=True)[0]
    ex = pred.explanation
    assert ex is not None
    assert ex.image_tokens == 17  # tiny ViT: CLS + 4 x 4 patches
    assert (
        ex.text_tokens == len(ex.words) >= 3 and ex.words[0] == "[CLS]" and ex.words[-1] == "[SEP]"
    )
    t2i = ex.maps["level0.t2i"]
    assert t2i.shape == (ex.text_tokens, 17)
    assert ex.maps["level1.i2t"].shape == (17, ex.text_tokens)
    np.testing.assert_allclose(t2i.sum(axis=1), 1.0, atol=1e-4)
    heat = region_heatmap(ex)
    assert heat is not None and heat.shape == (4, 4) and heat.max() == pytest.approx(1.0)
    ww = word_weights(ex)
    assert ww is not None and [w for w, _ in ww] == ex.words
    assert sum(x for _, x in ww) == pytest.approx(1.0, abs=1e-4)


def test_bad_inputs(predictor, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BadInputError, match="captions for"):
        predictor.predict([random_image()], ["a", "b"])
    image_encoder, text_encoder = encoders()
    family = image_encoder.encoder_id.rsplit("@", 1)[0]
    other = make_bundle(
        tmp_path / "m", ids=(f"{family}@000000000000:other", text_encoder.encoder_id)
    )
    with pytest.raises(ConfigError, match="trained with image encoder"):
        Predictor(other, image_encoder=image_encoder, text_encoder=text_encoder)
    # an id that names no buildable encoder gets a one-line fix
    with pytest.raises(ConfigError, match="--image-encoder"):
        Predictor(other)


def test_encoders_built_from_the_bundle(bundle_dir: Path) -> None:
    alone = Predictor(bundle_dir)  # built from the hf:<folder> names kept in the bundle's extra
    assert alone.image_encoder.encoder_id == encoders()[0].encoder_id
    p = alone.predict([random_image(seed=9)], ["roads and roofs"], top_k=1)[0]
    assert p.top_k[0].label in CLASSES


def test_views_average_the_dihedral_predictions_like_evaluation(bundle_dir: Path) -> None:
    """A bundle trained with views is scored with them (test-time augmentation), as `evaluate` does."""
    from skyfuse.encoders.views import apply_view

    image_encoder, text_encoder = encoders()
    tta = make_predictor(bundle_dir, views=4)
    assert tta.views == [0, 1, 2, 3]
    assert make_predictor(bundle_dir).views == [0]  # an old bundle: one view
    images = [random_image(seed=s) for s in range(3)]
    caps = ["a road", "green fields", "water"]
    logits, _, _ = tta.forward(images, caps)
    with torch.inference_mode():
        pixels = image_encoder.preprocess(images)
        text = text_encoder.encode_texts(caps)
        probs = []
        for v in range(4):
            img = image_encoder.encode(apply_view(pixels, v))
            out = tta.model(img.tokens, img.mask, text.tokens.float(), text.mask)
            probs.append(out.logits.float().softmax(-1))
    torch.testing.assert_close(logits.softmax(-1), torch.stack(probs).mean(0), atol=1e-5, rtol=1e-4)
    with pytest.raises(ConfigError, match="--views"):
        make_predictor(bundle_dir, views=3)
