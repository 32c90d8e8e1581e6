"""EndToEndClassifier: shapes, gradients into both encoders, per-sample independence, masks, options."""

from __future__ import annotations

import pytest
import torch

from skyfuse.errors import ConfigError
from skyfuse.models import FusionConfig, create_model
from skyfuse.models.e2e import (
    EndToEndClassifier,
    HFTextTower,
    HFVisionTower,
    attention_implementations,
    build_end_to_end,
    set_attention,
    text_model_from_config,
    to_channels_last,
    vision_model_from_config,
)

VOCAB, LEN, SIZE = 100, 12, 32


def configs() -> tuple[object, object]:
    from transformers import CLIPTextConfig, ViTConfig

    vc = ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=SIZE,
        patch_size=8,
    )
    tc = CLIPTextConfig(
        hidden_size=24,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
        vocab_size=VOCAB,
        max_position_embeddings=LEN,
        bos_token_id=VOCAB - 2,
        eos_token_id=VOCAB - 1,
        pad_token_id=0,
    )
    return vc, tc


def inputs(b: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(b, 3, SIZE, SIZE, generator=g)
    lengths = torch.randint(3, LEN + 1, (b,), generator=g)
    ids = torch.randint(1, VOCAB - 2, (b, LEN), generator=g)
    mask = (torch.arange(LEN)[None, :] < lengths[:, None]).long()
    return pixels, ids * mask, mask


@pytest.fixture(scope="module")
def model() -> EndToEndClassifier:
    torch.manual_seed(0)
    vc, tc = configs()
    return build_end_to_end(vc, tc, num_classes=5, width=16, heads=2, dropout=0.0).eval()


def test_forward_shapes_and_gradients_reach_both_encoders(model: EndToEndClassifier) -> None:
    pixels, ids, mask = inputs(3)
    model.train()
    try:
        out = model(pixels, ids, mask)
        assert out.logits.shape == (3, 5)
        assert out.fused.shape == (3, model.fusion.fused_dim)
        torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 1, 2])).backward()
        for part in (model.image_encoder, model.text_encoder, model.fusion):
            grads = [p.grad for p in part.parameters() if p.requires_grad]
            assert any(g is not None and g.abs().sum() > 0 for g in grads), type(part).__name__
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def test_prediction_does_not_depend_on_the_rest_of_the_batch(model: EndToEndClassifier) -> None:
    pixels, ids, mask = inputs(4)
    with torch.no_grad():
        together = model(pixels, ids, mask).logits
        alone = torch.cat(
            [model(pixels[i : i + 1], ids[i : i + 1], mask[i : i + 1]).logits for i in range(4)]
        )
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


def test_padding_tokens_change_nothing(model: EndToEndClassifier) -> None:
    pixels, ids, mask = inputs(3, seed=1)
    mask[:, LEN - 4 :] = 0  # every caption has >= 4 padding positions
    ids = ids * mask
    garbage = ids.clone()
    garbage[:, LEN - 4 :] = torch.randint(1, VOCAB - 2, (3, 4))
    with torch.no_grad():
        a = model(pixels, ids, mask).logits
        b = model(pixels, garbage, mask).logits
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_sdpa_and_eager_attention_agree(model: EndToEndClassifier) -> None:
    pixels, ids, mask = inputs(3, seed=2)
    assert set(attention_implementations(model).values()) == {"sdpa"}
    with torch.no_grad():
        fast = model(pixels, ids, mask).logits
        set_attention(model, "eager")
        try:
            assert set(attention_implementations(model).values()) == {"eager"}
            slow = model(pixels, ids, mask).logits
        finally:
            set_attention(model, "sdpa")
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="attention implementation"):
        set_attention(model, "magic")


def test_bf16_compute_dtype_and_channels_last(model: EndToEndClassifier) -> None:
    pixels, ids, mask = inputs(2, seed=3)
    with torch.no_grad():
        ref = model(pixels, ids, mask).logits
        model.compute_dtype = torch.bfloat16
        try:
            low = model(pixels, ids, mask).logits
        finally:
            model.compute_dtype = None
        to_channels_last(model)
        cl = model(pixels.contiguous(memory_format=torch.channels_last), ids, mask).logits
    assert low.dtype == torch.bfloat16
    assert torch.isfinite(low).all()
    torch.testing.assert_close(low.float(), ref, rtol=0.1, atol=0.1)
    torch.testing.assert_close(cl, ref, rtol=1e-4, atol=1e-5)


def test_embed_matches_forward_fused(model: EndToEndClassifier) -> None:
    pixels, ids, mask = inputs(2, seed=4)
    with torch.no_grad():
        torch.testing.assert_close(model.embed(pixels, ids, mask), model(pixels, ids, mask).fused)


def test_param_groups_cover_every_parameter_once(model: EndToEndClassifier) -> None:
    groups = model.param_groups(encoder_lr=1e-5, fusion_lr=1e-3, weight_decay=0.1)
    seen = [id(p) for g in groups for p in g["params"]]
    assert len(seen) == len(set(seen)) == sum(1 for p in model.parameters() if p.requires_grad)
    enc = {id(p) for p in model.encoder_parameters()}
    for g in groups:
        ids_ = {id(p) for p in g["params"]}
        assert ids_ <= enc or not (ids_ & enc), "a group mixes encoder and fusion parameters"
        assert g["lr"] == (1e-5 if ids_ <= enc else 1e-3)
        if g["weight_decay"]:
            assert all(p.ndim > 1 for p in g["params"])
    torch.optim.AdamW(groups)  # the groups are valid optimizer input


def test_mismatched_or_frozen_encoders_are_refused() -> None:
    vc, tc = configs()
    image = HFVisionTower(vision_model_from_config(vc))
    text = HFTextTower(text_model_from_config(tc))
    wrong = create_model(
        FusionConfig(model="dual", image_dim=64, text_dim=24, num_classes=3, width=16, heads=2)
    )
    with pytest.raises(ConfigError, match="widths"):
        EndToEndClassifier(image, text, wrong)
    right = create_model(
        FusionConfig(model="dual", image_dim=32, text_dim=24, num_classes=3, width=16, heads=2)
    )
    text.frozen = True
    with pytest.raises(ConfigError, match="trainable=True"):
        EndToEndClassifier(image, text, right)


def test_registry_encoders_fine_tune_end_to_end() -> None:
    """The bundled encoders (EfficientNet-Lite0 + MiniLM), built trainable, plug in unchanged."""
    from skyfuse.encoders import create_image_encoder, create_text_encoder

    image = create_image_encoder("efficientnet-lite0", trainable=True)
    text = create_text_encoder("minilm", trainable=True)
    cfg = FusionConfig(
        model="dual", image_dim=image.dim, text_dim=text.dim, num_classes=3, width=32, heads=2
    )
    model = EndToEndClassifier(image, text, create_model(cfg))  # type: ignore[arg-type]
    size = image.preprocess_cfg.size
    batch = text.tokenize(["a river between fields", "dense roofs and streets"])
    out = model(torch.randn(2, 3, size, size), **batch)
    out.logits.sum().backward()
    assert out.logits.shape == (2, 3)
    assert any(p.grad is not None for p in image.parameters())  # type: ignore[attr-defined]
    assert any(p.grad is not None for p in text.parameters())  # type: ignore[attr-defined]
