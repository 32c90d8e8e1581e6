"""The offline defaults: EfficientNet-Lite0 (image) and all-MiniLM-L6-v2 (text)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from skyfuse.encoders import ImageEncoder, TextEncoder, create_image_encoder, create_text_encoder


def test_lite0_tokens_mask_pooled(lite0) -> None:
    assert isinstance(lite0, ImageEncoder)
    assert lite0.preprocess_cfg.size == 224
    assert lite0.preprocess_cfg.mean == (0.5, 0.5, 0.5) and lite0.preprocess_cfg.std == (
        0.5,
        0.5,
        0.5,
    )
    pixels = lite0.preprocess(
        [Image.new("RGB", (300, 200), "red"), Image.new("RGB", (64, 64), "green")]
    )
    assert pixels.shape == (2, 3, 224, 224)
    with torch.inference_mode():
        out = lite0.encode(pixels)
    assert out.tokens.shape == (2, 49, 1280) and lite0.dim == 1280
    assert out.mask.dtype == torch.bool and bool(out.mask.all())
    assert torch.allclose(out.pooled, out.tokens.mean(1), atol=1e-5)
    assert not torch.allclose(out.pooled[0], out.pooled[1])
    assert lite0.encoder_id.startswith("efficientnet-lite0@57934424")  # weights hash prefix


def test_lite0_is_frozen_and_stays_in_eval(lite0) -> None:
    assert all(not p.requires_grad for p in lite0.parameters())
    lite0.train()
    assert not lite0.training


def test_lite0_grid_and_trainable() -> None:
    enc = create_image_encoder("efficientnet-lite0", grid=2, trainable=True, size=64)
    assert enc.encoder_id.endswith("-g2") and "64s" in enc.encoder_id
    enc.train()
    assert enc.training
    out = enc.encode(torch.randn(1, 3, 64, 64))
    assert out.tokens.shape == (1, 4, 1280)
    out.pooled.sum().backward()
    assert enc.net._conv_stem.weight.grad is not None


def test_minilm_tokens_mask_pooled(minilm) -> None:
    assert isinstance(minilm, TextEncoder)
    assert minilm.dim == 384 and minilm.max_length == 128
    texts = ["red roofs", "many green trees along a river with a road and some cars"]
    with torch.inference_mode():
        out = minilm.encode_texts(texts)
        batch = minilm.tokenize(texts)
    assert out.tokens.shape[:2] == batch["input_ids"].shape and out.tokens.shape[2] == 384
    assert torch.equal(out.mask, batch["attention_mask"].bool())
    assert out.mask[0].sum() < out.mask[1].sum()
    w = out.mask.float().unsqueeze(-1)
    expected = F.normalize((out.tokens * w).sum(1) / w.sum(1), dim=-1)
    assert torch.allclose(out.pooled, expected, atol=1e-5)
    assert torch.allclose(out.pooled.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_minilm_padding_changes_nothing(minilm) -> None:
    with torch.inference_mode():
        alone = minilm.encode_texts(["red roofs"])
        padded = minilm.encode_texts(
            ["red roofs", "a much longer caption about a harbour with boats"]
        )
    n = int(alone.mask.sum())
    assert torch.allclose(alone.tokens[0, :n], padded.tokens[0, :n], atol=1e-4)
    assert torch.allclose(alone.pooled[0], padded.pooled[0], atol=1e-5)


def test_minilm_truncation_is_counted() -> None:
    enc = create_text_encoder("minilm", max_length=16, normalize=False)
    long = " ".join(["trees"] * 40)
    assert enc.count_truncated([long, "short"]) == 1
    with torch.inference_mode():
        out = enc.encode_texts([long])
    assert out.tokens.shape[1] == 16
    assert "len16" in enc.encoder_id and enc.encoder_id != create_text_encoder("minilm").encoder_id
    with pytest.raises(Exception, match="max_length"):
        create_text_encoder("minilm", max_length=10_000)


def test_lite0_folded_batchnorm_matches_the_plain_network(lite0) -> None:
    plain = create_image_encoder("efficientnet-lite0", trainable=True).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        a, b = lite0.encode(x), plain.encode(x)
    assert torch.allclose(a.tokens, b.tokens, atol=1e-3)
    with pytest.raises(Exception, match="trainable=True"):
        lite0.freeze(False)
