"""Prediction uses captions of the kind the model was trained on, or refuses; never guesses.

Regression (issue 13): a model trained on human captions was served with offline attribute captions
and answered "Stadium" 54 % for a beach; the only trace was a log line.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from skyfuse.captioning.attributes import VERSION
from skyfuse.captioning.base import Captioner, CaptionFailure, ImageJob
from skyfuse.captioning.prompts import Prompt, resolve_prompt
from skyfuse.captioning.provenance import CaptionSource
from skyfuse.errors import ConfigError
from skyfuse.inference import CaptionRefused, resolve_caption_policy
from tests.inference.helpers import make_bundle, make_predictor, random_image

ATTRS = f"attributes:{VERSION}"


@pytest.fixture(scope="module")
def human_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("human") / "model", caption_source="human")


def test_human_caption_model_refuses_to_caption(human_dir: Path) -> None:
    p = make_predictor(human_dir)
    assert p.caption_policy.mode == "refuse" and p.training_captions.kind == "files"
    with pytest.raises(CaptionRefused, match="no captioner can reproduce") as info:
        p.predict([random_image(seed=1)])
    assert "--captions" in str(info.value) and "--allow-caption-mismatch" in str(info.value)
    # given captions are what such a model is for
    pred = p.predict([random_image(seed=1)], ["boats in a harbour"], top_k=2)[0]
    assert pred.to_dict()["caption_source"] == "given" and pred.caption_mismatch is False
    assert len(pred.top_k) == 2


def test_forcing_another_captioner_needs_the_flag_and_is_flagged(human_dir: Path) -> None:
    with pytest.raises(ConfigError, match="--allow-caption-mismatch"):
        make_predictor(human_dir, captioner="attributes")
    p = make_predictor(human_dir, captioner="attributes", allow_caption_mismatch=True)
    rec = p.predict([random_image(seed=2)], top_k=1)[0].to_dict()
    assert rec["caption_source"] == ATTRS and rec["caption_mismatch"] is True
    assert rec["caption"] and "error" not in rec


def test_attribute_model_captions_with_the_attribute_captioner(bundle_dir: Path) -> None:
    p = make_predictor(bundle_dir)
    rec = p.predict([random_image(seed=3), random_image(seed=4)], [None, "given text"])
    assert [r.caption_source for r in rec] == [ATTRS, "given"]
    assert [r.caption_mismatch for r in rec] == [False, False]
    # forcing the same kind needs no flag and is not a mismatch
    same = make_predictor(bundle_dir, captioner="attributes")
    assert same.caption_policy.mismatch is False


def test_old_bundle_without_a_source_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = make_bundle(tmp_path / "old", caption_source=None)
    with caplog.at_level(logging.WARNING):
        p = make_predictor(old)
    assert "records no caption source" in caplog.text
    assert p.training_captions.kind == "unknown" and p.caption_policy.mode == "refuse"
    assert "unknown caption source" in str(p.caption_policy.refusal)
    forced = make_predictor(old, captioner="attributes", allow_caption_mismatch=True)
    assert forced.predict([random_image()], top_k=1)[0].caption_mismatch is True


def _vlm(prompt: Prompt | None, backend: str = "openai") -> CaptionSource:
    return CaptionSource(
        kind="captioner",
        backend=backend,
        model="qwen2-vl",
        prompt_id=prompt.id if prompt else "mine",
        prompt_text=prompt.text if prompt else None,
        prompt_hash=prompt.hash if prompt else "0123456789abcdef",
        is_vlm=True,
    )


def test_vlm_source_asks_for_its_server_and_keeps_model_and_prompt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    custom = Prompt("mine", "List what covers the ground, nothing else.")
    trained = _vlm(custom)
    policy = resolve_caption_policy(trained)
    assert policy.mode == "refuse" and "--base-url" in str(policy.refusal)
    policy = resolve_caption_policy(trained, options={"base_url": "http://127.0.0.1:9/v1"})
    assert policy.mode == "captioner" and policy.captioner == "openai"
    assert policy.options["model"] == "qwen2-vl"  # the training model, not a default
    assert policy.prompt == custom  # the recorded text, although no such prompt file exists here
    assert policy.source_id == "openai:qwen2-vl:mine" and policy.mismatch is False
    with pytest.raises(ConfigError, match="--allow-caption-mismatch"):
        resolve_caption_policy(trained, options={"base_url": "http://x/v1", "model": "llava"})


def test_vlm_prompt_text_not_recorded_needs_the_prompt_file(tmp_path: Path) -> None:
    text = "Describe the roofs and roads."
    f = tmp_path / "mine.txt"
    f.write_text(text)
    trained = _vlm(None, backend="transformers")
    trained = CaptionSource(**{**trained.__dict__, "prompt_hash": Prompt("mine", text).hash})
    policy = resolve_caption_policy(trained, options={"model": "/models/qwen2-vl"})
    assert policy.mode == "refuse" and "--prompt FILE" in str(policy.refusal)
    ok = resolve_caption_policy(trained, options={"model": "qwen2-vl"}, prompt=str(f))
    assert ok.mode == "captioner" and ok.mismatch is False
    other = tmp_path / "other.txt"
    other.write_text("Name the scene.")
    with pytest.raises(ConfigError, match="--allow-caption-mismatch"):
        resolve_caption_policy(trained, options={"model": "qwen2-vl"}, prompt=str(other))
    no_model = resolve_caption_policy(_vlm(resolve_prompt("ground"), backend="transformers"))
    assert no_model.mode == "refuse" and "--vlm-model" in str(no_model.refusal)


class FailingAttributes(Captioner):
    """Claims to be the attribute captioner (same kind) but fails on every other image."""

    backend = "attributes"
    uses_prompt = False
    batch_size = 8

    def __init__(self) -> None:
        self.model = VERSION

    def caption_batch(self, jobs: list[ImageJob], prompt: Prompt) -> list[str | CaptionFailure]:
        return [
            "grey roofs and roads" if i % 2 == 0 else CaptionFailure("VLM timed out")
            for i, _ in enumerate(jobs)
        ]


def test_failed_caption_is_an_error_never_an_empty_caption(bundle_dir: Path) -> None:
    p = make_predictor(bundle_dir, captioner=FailingAttributes(), batch_size=4)
    preds = p.predict([random_image(seed=i) for i in range(4)], top_k=2)
    good, bad = preds[0], preds[1]
    assert good.error is None and good.caption == "grey roofs and roads" and len(good.top_k) == 2
    assert bad.error is not None and "timed out" in bad.error and bad.error_status == 502
    assert bad.top_k == [] and bad.caption is None
    assert bad.to_dict()["error"] == bad.error
    # the good images are scored exactly as when predicted alone
    alone = p.predict([random_image(seed=0)], ["grey roofs and roads"], top_k=2)[0]
    assert [t.prob for t in alone.top_k] == pytest.approx([t.prob for t in good.top_k], abs=1e-5)


def test_blank_captions_from_a_function_are_errors(bundle_dir: Path) -> None:
    def blank(images: Any) -> list[str]:
        return ["   "] * len(images)

    p = make_predictor(bundle_dir, captioner=blank, allow_caption_mismatch=True)
    pred = p.predict([random_image()], top_k=1)[0]
    assert pred.error is not None and pred.top_k == [] and pred.caption_mismatch is True


@pytest.fixture(scope="module")
def dropout_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(
        tmp_path_factory.mktemp("drop") / "model",
        caption_source="human",
        fusion={"caption_dropout": 0.3},
    )


def test_caption_dropout_bundle_predicts_image_only_and_says_so(dropout_dir: Path) -> None:
    p = make_predictor(dropout_dir)
    assert p.caption_policy.mode == "image-only"
    images = [random_image(seed=7), random_image(seed=8)]
    preds = p.predict(images, [None, "a harbour with boats"], top_k=4)
    rec = preds[0].to_dict()
    assert rec["caption_source"] == "none" and rec["caption"] is None
    assert rec["caption_mismatch"] is False and len(rec["top_k"]) == 4
    assert preds[1].caption_source == "given"
    # image-only means an all-False text mask, the way caption dropout trains it
    with torch.inference_mode():
        image, text = p.encode(images[:1], [""])
        hidden = torch.zeros_like(text.mask)
        logits = p.model(image.tokens, image.mask, text.tokens * 0, hidden).logits
    probs = torch.softmax(logits, -1)[0].sort(descending=True).values.tolist()
    assert [t.prob for t in preds[0].top_k] == pytest.approx(probs, abs=1e-5)


def test_zeroshot_predictor_follows_the_same_policy(tmp_path: Path) -> None:
    from skyfuse.inference import load_predictor
    from tests.inference.helpers import encoders, make_zeroshot_bundle

    zs = make_zeroshot_bundle(tmp_path / "zs")
    image_encoder, text_encoder = encoders()
    p = load_predictor(zs, image_encoder=image_encoder, text_encoder=text_encoder)
    rec = p.predict([random_image()], top_k=2)[0].to_dict()
    assert rec["caption_source"] == ATTRS and rec["caption_mismatch"] is False


def test_explain_refuses_before_writing_and_explains_image_only(
    tmp_path: Path, human_dir: Path, dropout_dir: Path
) -> None:
    import json

    from skyfuse.inference.explain import explain_path

    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(5):
        random_image(48, seed=i).save(root / f"{i}.png")
    out = tmp_path / "explain"
    with pytest.raises(CaptionRefused, match="5 of 5 images have no caption"):
        explain_path(make_predictor(human_dir), root, out, examples=1)
    assert not out.exists()
    explain_path(make_predictor(dropout_dir), root, out, examples=1)
    recs = json.loads((out / "explain.json").read_text())["images"]
    assert len(recs) == 5 and all(r["caption_source"] == "none" for r in recs)
    assert all(r["caption"] is None and r["caption_mismatch"] is False for r in recs)
