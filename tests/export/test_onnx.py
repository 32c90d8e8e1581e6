from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from skyfuse.errors import ConfigError
from skyfuse.export import export_bundle, export_fusion, export_image_encoder
from skyfuse.export.onnx import FUSION_INPUTS, fusion_inputs
from skyfuse.models import FusionConfig, create_model
from tests.inference.helpers import encoders


@pytest.mark.parametrize("name", ["dual", "concat", "t2i", "i2t", "image", "text"])
def test_fusion_models_match_torch_with_masks(tmp_path: Path, name: str) -> None:
    cfg = FusionConfig(
        model=name, image_dim=20, text_dim=12, num_classes=5, width=16, heads=2, levels=2
    )
    torch.manual_seed(0)
    model = create_model(cfg).eval()
    res = export_fusion(model, tmp_path / f"{name}.onnx", image_dim=20, text_dim=12)
    assert res.max_abs_diff is not None and res.max_abs_diff < 1e-4
    assert not model.training
    # independent check with other shapes: ragged masks, one all-padding row, batch of 1
    sess = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    for batch, n_img, n_txt, seed in ((5, 25, 17, 3), (1, 4, 3, 4)):
        x = fusion_inputs(20, 12, batch=batch, n_image=n_img, n_text=n_txt, seed=seed)
        feed = {k: v.numpy() for k, v in zip(FUSION_INPUTS, x, strict=True) if k in names}
        logits, fused = sess.run(None, feed)
        with torch.no_grad():
            ref = model(*x)
        np.testing.assert_allclose(logits, ref.logits.numpy(), atol=1e-4)
        np.testing.assert_allclose(fused, ref.fused.numpy(), atol=1e-4)
    if name == "dual":
        # the masks are real inputs of the graph: padding more tokens changes the answer, as in torch
        x = list(fusion_inputs(20, 12, batch=2, n_image=8, n_text=6, seed=5))
        x[1] = torch.ones(2, 8, dtype=torch.bool)
        x[3] = torch.ones(2, 6, dtype=torch.bool)
        full = sess.run(None, {k: v.numpy() for k, v in zip(FUSION_INPUTS, x, strict=True)})[0]
        x[3][:, 3:] = False
        part = sess.run(None, {k: v.numpy() for k, v in zip(FUSION_INPUTS, x, strict=True)})[0]
        with torch.no_grad():
            ref = model(*x).logits.numpy()
        assert np.abs(full - part).max() > 1e-3
        np.testing.assert_allclose(part, ref, atol=1e-4)


def test_export_bundle_with_encoders(tmp_path: Path, bundle_dir: Path) -> None:
    ie, te = encoders()
    out = tmp_path / "deploy" / "scene.onnx"
    report = export_bundle(bundle_dir, out, image_encoder=ie, text_encoder=te)
    by_name = {r.name: r for r in report.results}
    assert set(by_name) == {"fusion", "image_encoder", "text_encoder"}
    for r in report.results:
        assert r.error is None and r.path is not None and r.path.is_file()
        assert r.max_abs_diff is not None and r.max_abs_diff < 1e-4, r
    meta = json.loads((tmp_path / "deploy" / "scene.json").read_text())
    assert meta["class_names"] == ["beach", "desert", "forest", "water"]
    assert meta["caption_source"]["id"].startswith("attributes:")  # what captions to feed it
    assert meta["image_encoder_onnx"]["preprocess"]["size"] == 32
    tok = tmp_path / "deploy" / meta["text_encoder_onnx"]["tokenizer"]
    assert tok.is_dir()
    # the exported pieces chain without skyfuse: tokenizer -> text graph, pixels -> image graph -> fusion
    from transformers import AutoTokenizer

    enc = AutoTokenizer.from_pretrained(str(tok))(["green fields and a river"], return_tensors="np")
    text = ort.InferenceSession(str(by_name["text_encoder"].path)).run(
        None,
        {
            "input_ids": enc["input_ids"].astype(np.int64),
            "attention_mask": enc["attention_mask"].astype(np.int64),
        },
    )
    pixels = np.random.default_rng(0).uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32)
    image = ort.InferenceSession(str(by_name["image_encoder"].path)).run(None, {"pixels": pixels})
    logits = ort.InferenceSession(str(out)).run(
        None,
        {
            "image_tokens": image[0],
            "image_mask": image[1],
            "text_tokens": text[0],
            "text_mask": text[1],
        },
    )[0]
    with torch.no_grad():
        t = te.encode_texts(["green fields and a river"])
        i = ie.encode(torch.from_numpy(pixels))
        from skyfuse.training.bundle import load_bundle

        ref = load_bundle(bundle_dir).model(i.tokens, i.mask, t.tokens, t.mask).logits.numpy()
    np.testing.assert_allclose(logits, ref, atol=1e-4)


def test_bundled_efficientnet_exports(tmp_path: Path) -> None:
    """The default image encoder (bundled EfficientNet-Lite0 weights) exports within tolerance."""
    from skyfuse.encoders import create_image_encoder

    encoder = create_image_encoder("efficientnet-lite0", size=96)  # same graph, smaller input
    res = export_image_encoder(encoder, tmp_path / "lite0.onnx")
    assert res.max_abs_diff is not None and res.max_abs_diff < 1e-4


def test_export_refuses_bad_name(tmp_path: Path, bundle_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"\*\.onnx"):
        export_bundle(bundle_dir, tmp_path / "x.bin", encoders=False)
