"""Every fusion model: per-sample attention, padding invariance, all-padding safety, shapes, gradients."""

from __future__ import annotations

import pytest
import torch

from skyfuse.errors import BadInputError
from skyfuse.models import FusionConfig, FusionModel, create_model, list_models

DI, DT, C = 12, 10, 4
ALL = ["dual", "image", "text", "concat", "t2i", "i2t"]


def _model(name: str, **kw: object) -> FusionModel:
    opts: dict[str, object] = dict(
        model=name, image_dim=DI, text_dim=DT, num_classes=C, width=16, heads=4, levels=2
    )
    opts.update(kw)
    torch.manual_seed(0)
    return create_model(FusionConfig(**opts))  # type: ignore[arg-type]


def _batch(b: int = 5, n: int = 6, length: int = 7, seed: int = 1) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(b, n, DI, generator=g)
    txt = torch.randn(b, length, DT, generator=g)
    img_mask = torch.ones(b, n, dtype=torch.bool)
    img_mask[0, -2:] = False
    txt_lens = torch.randint(1, length + 1, (b,), generator=g)
    txt_mask = torch.arange(length)[None, :] < txt_lens[:, None]
    return img, img_mask, txt, txt_mask


def test_all_models_registered() -> None:
    assert sorted(ALL) == list_models()


@pytest.mark.parametrize("name", ALL)
def test_shapes_and_gradients(name: str) -> None:
    model = _model(name)
    img, im, txt, tm = _batch()
    img.requires_grad_(True)
    txt.requires_grad_(True)
    out = model(img, im, txt, tm)
    assert out.logits.shape == (5, C)
    assert out.fused.shape == (5, model.fused_dim)
    assert out.attention is None
    out.logits.sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
    assert (img.grad is not None) == model.uses_image
    assert (txt.grad is not None) == model.uses_text
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.embed(img, im, txt, tm), model(img, im, txt, tm).fused)


@pytest.mark.parametrize("name", ALL)
def test_prediction_independent_of_batch(name: str) -> None:
    model = _model(name).eval()
    img, im, txt, tm = _batch(b=6)
    with torch.no_grad():
        together = model(img, im, txt, tm).logits
        for i in range(6):
            alone = model(img[i : i + 1], im[i : i + 1], txt[i : i + 1], tm[i : i + 1]).logits
            torch.testing.assert_close(alone[0], together[i], rtol=1e-4, atol=1e-5)
        # Reversing the batch permutes the outputs and changes nothing else.
        flipped = model(img.flip(0), im.flip(0), txt.flip(0), tm.flip(0)).logits
    torch.testing.assert_close(flipped.flip(0), together, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_padding_changes_nothing(name: str) -> None:
    model = _model(name).eval()
    img, im, txt, tm = _batch()
    junk_img = torch.randn(5, 3, DI) * 50
    junk_txt = torch.randn(5, 4, DT) * 50
    pad_img = torch.cat([img, junk_img], 1)
    pad_im = torch.cat([im, torch.zeros(5, 3, dtype=torch.bool)], 1)
    pad_txt = torch.cat([txt, junk_txt], 1)
    pad_tm = torch.cat([tm, torch.zeros(5, 4, dtype=torch.bool)], 1)
    with torch.no_grad():
        ref = model(img, im, txt, tm)
        padded = model(pad_img, pad_im, pad_txt, pad_tm)
    torch.testing.assert_close(padded.logits, ref.logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(padded.fused, ref.fused, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_all_padding_rows_are_finite(name: str) -> None:
    model = _model(name)
    img, im, txt, tm = _batch()
    im[1] = False
    tm[2] = False
    im[3] = False
    tm[3] = False
    out = model(img, im, txt, tm, return_attention=True)
    assert torch.isfinite(out.logits).all()
    out.logits.sum().backward()
    for p in model.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


@pytest.mark.parametrize("name", ["dual", "t2i", "i2t"])
def test_attention_weights_sum_to_one_over_real_keys(name: str) -> None:
    model = _model(name).eval()
    img, im, txt, tm = _batch()
    with torch.no_grad():
        out = model(img, im, txt, tm, return_attention=True)
        plain = model(img, im, txt, tm)
    assert out.attention
    torch.testing.assert_close(out.logits, plain.logits, rtol=1e-4, atol=1e-5)
    expected = {"dual": 6, "t2i": 4, "i2t": 2}[name]
    assert len(out.attention) == expected
    for key, w in out.attention.items():
        key_mask = im if key.endswith("t2i") else tm
        assert w.shape[:2] == (5, 4) and w.shape[-1] == key_mask.shape[1]
        real = key_mask[:, None, None, :].expand_as(w)
        assert (w[~real] == 0).all(), key
        torch.testing.assert_close(w.sum(-1), torch.ones_like(w.sum(-1)), rtol=1e-5, atol=1e-5)


def test_shared_weights_and_levels() -> None:
    shared = _model("dual", shared_weights=True, levels=3)
    per_level = _model("dual", shared_weights=False, levels=3)
    assert len(shared.blocks) == 1 and len(per_level.blocks) == 3  # type: ignore[arg-type]
    assert per_level.num_parameters() > shared.num_parameters()


def test_shortcut_widens_fused_vector() -> None:
    assert _model("dual", shortcut=True).fused_dim == 4 * 16
    assert _model("dual", shortcut=False).fused_dim == 2 * 16
    assert _model("t2i", shortcut=True).fused_dim == 3 * 16


def test_fp16_features_and_missing_masks() -> None:
    model = _model("dual").eval()
    img, _, txt, _ = _batch()
    with torch.no_grad():
        a = model(img.half(), None, txt.half(), None).logits
        b = model(
            img.half().float(), torch.ones(5, 6, dtype=torch.bool), txt.half().float(), None
        ).logits
    assert a.dtype == torch.float32
    torch.testing.assert_close(a, b)


def test_single_modality_models_accept_none() -> None:
    img, im, txt, tm = _batch()
    assert _model("image")(img, im, None, None).logits.shape == (5, C)
    assert _model("text")(None, None, txt, tm).logits.shape == (5, C)
    with pytest.raises(BadInputError, match="needs text tokens"):
        _model("dual")(img, im, None, None)


def test_wrong_feature_width_is_a_clear_error() -> None:
    img, im, txt, tm = _batch()
    with pytest.raises(BadInputError, match=r"expected \(B, N, 12\)"):
        _model("dual")(img[..., :5], im, txt, tm)
    with pytest.raises(BadInputError, match="mask"):
        _model("dual")(img, im[:, :2], txt, tm)


def test_image_stream_is_updated_between_levels() -> None:
    """Paper bug 5: level 1 must read the image stream that level 0's image->text attention updated."""
    model = _model("dual", dropout=0.0).eval()
    img, im, txt, tm = _batch()
    with torch.no_grad():
        before = model(img, im, txt, tm, return_attention=True).attention
        model.blocks[0].i2t.out.weight.mul_(3.0)  # type: ignore[union-attr,operator]
        after = model(img, im, txt, tm, return_attention=True).attention
    assert before is not None and after is not None
    torch.testing.assert_close(after["level0.t2i"], before["level0.t2i"])
    assert not torch.allclose(after["level1.t2i"], before["level1.t2i"], atol=1e-4)
    assert not torch.allclose(after["level1.i2t"], before["level1.i2t"], atol=1e-4)


@pytest.mark.parametrize("name", ALL)
def test_every_model_can_fit_a_small_problem(name: str) -> None:
    """Labels carried by the mean of the real tokens of either modality: every model must learn them."""
    g = torch.Generator().manual_seed(3)
    n = 48
    labels = torch.arange(n) % C
    centers_img = torch.randn(C, DI, generator=g) * 2
    centers_txt = torch.randn(C, DT, generator=g) * 2
    img = torch.randn(n, 6, DI, generator=g) + centers_img[labels][:, None]
    txt = torch.randn(n, 5, DT, generator=g) + centers_txt[labels][:, None]
    im = torch.ones(n, 6, dtype=torch.bool)
    tm = torch.arange(5)[None, :] < torch.randint(1, 6, (n,), generator=g)[:, None]
    model = _model(name, dropout=0.0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(model(img, im, txt, tm).logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(img, im, txt, tm).logits.argmax(-1) == labels).float().mean().item()
    assert acc > 0.9, f"{name}: train accuracy {acc:.2f}"


def test_drop_tokens_hides_only_real_tokens_and_keeps_one() -> None:
    from skyfuse.models.layers import drop_tokens

    torch.manual_seed(0)
    tokens = torch.zeros(400, 20, 3)
    mask = torch.ones(400, 20, dtype=torch.bool)
    mask[:, 15:] = False  # padding stays padding
    mask[7] = False  # an all-padding row stays all padding
    out = drop_tokens(tokens, mask, 0.5)
    assert out is not None
    assert not (out & ~mask).any()
    assert not out[7].any()
    rows = torch.arange(400) != 7
    assert out[rows].any(dim=1).all()
    hidden = 1 - out[rows].sum() / mask[rows].sum()
    assert 0.45 < float(hidden) < 0.55
    # Nearly everything hidden: every row with a real token still keeps one.
    assert drop_tokens(tokens, mask, 0.999)[rows].any(dim=1).all()  # type: ignore[index]
    assert drop_tokens(tokens, None, 0.0) is None


@pytest.mark.parametrize("name", ALL)
def test_token_drop_acts_in_training_only(name: str) -> None:
    img, im, txt, tm = _batch()
    plain, dropped = _model(name).eval(), _model(name, token_drop=0.5).eval()
    with torch.no_grad():
        torch.testing.assert_close(dropped(img, im, txt, tm).logits, plain(img, im, txt, tm).logits)
    dropped.train()
    plain.train()
    for m in (plain, dropped):
        for mod in m.modules():
            if isinstance(mod, torch.nn.Dropout):
                mod.p = 0.0
    torch.manual_seed(3)
    with torch.no_grad():
        a = dropped(img, im, txt, tm).logits
        b = plain(img, im, txt, tm).logits
    assert torch.isfinite(a).all()
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("name", ALL)
def test_linear_path_adds_the_probe_map_of_pooled_inputs(name: str) -> None:
    """With the fusion head zeroed, the logits are exactly the linear map of the pooled inputs."""
    model = _model(name, linear_path=True).eval()
    img, im, txt, tm = _batch()
    with torch.no_grad():
        model.head[-1].weight.zero_()
        model.head[-1].bias.zero_()
        logits = model(img, im, txt, tm).logits
    expected = torch.zeros_like(logits)
    pooled_img = (img * im[..., None]).sum(1) / im.sum(1, keepdim=True)
    pooled_txt = (txt * tm[..., None]).sum(1) / tm.sum(1, keepdim=True)
    if model.uses_image:
        assert model.linear_image is not None
        expected += model.linear_image(pooled_img)
    if model.uses_text:
        assert model.linear_text is not None
        expected += model.linear_text(pooled_txt)
    torch.testing.assert_close(logits, expected)
    assert _model(name).linear_image is None


def test_hide_captions_drops_whole_captions_at_the_rate() -> None:
    from skyfuse.models.base import hide_captions

    torch.manual_seed(0)
    tokens = torch.zeros(2000, 9, 3)
    mask = torch.ones(2000, 9, dtype=torch.bool)
    mask[:, 6:] = False
    out = hide_captions(tokens, mask, 0.3)
    hidden = ~out.any(dim=1)
    assert not (out & ~mask).any()
    assert 0.26 < float(hidden.float().mean()) < 0.34
    assert (out[~hidden] == mask[~hidden]).all()  # a kept caption keeps every token


@pytest.mark.parametrize("name", ["dual", "concat", "i2t", "t2i"])
def test_caption_dropout_in_training_only_and_image_only_prediction(name: str) -> None:
    img, im, txt, tm = _batch()
    plain, dropped = _model(name).eval(), _model(name, caption_dropout=0.5).eval()
    with torch.no_grad():
        torch.testing.assert_close(dropped(img, im, txt, tm).logits, plain(img, im, txt, tm).logits)
        # no caption at all: an all-False mask gives finite logits that ignore the text tokens
        none = torch.zeros(img.shape[0], 1, dtype=torch.bool)
        a = dropped(img, im, torch.randn(img.shape[0], 1, DT), none).logits
        b = dropped(img, im, torch.zeros(img.shape[0], 1, DT), none).logits
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a, b)
    dropped.train()
    torch.manual_seed(5)
    with torch.no_grad():
        seen = dropped(img, im, txt, tm).logits
    assert torch.isfinite(seen).all()
