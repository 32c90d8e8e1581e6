"""Property test: for random shapes and ragged masks (empty rows included), `dual` stays finite,
per-sample and blind to padding."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from skyfuse.models import FusionConfig, create_model

torch.manual_seed(0)
MODEL = create_model(
    FusionConfig(model="dual", image_dim=6, text_dim=5, num_classes=3, width=8, heads=2, levels=2)
).eval()


@st.composite
def batches(draw: st.DrawFn) -> tuple[torch.Tensor, ...]:
    b = draw(st.integers(1, 4))
    n = draw(st.integers(1, 5))
    length = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    img_mask = torch.rand(b, n, generator=g) < draw(st.floats(0.0, 1.0))
    txt_mask = torch.rand(b, length, generator=g) < draw(st.floats(0.0, 1.0))
    return (
        torch.randn(b, n, 6, generator=g),
        img_mask,
        torch.randn(b, length, 5, generator=g),
        txt_mask,
    )


@settings(max_examples=25, deadline=None)
@given(batches(), st.integers(0, 3), st.integers(0, 3))
def test_dual_is_finite_per_sample_and_padding_blind(
    x: tuple[torch.Tensor, ...], pi: int, pt: int
) -> None:
    img, im, txt, tm = x
    b = img.shape[0]
    with torch.no_grad():
        out = MODEL(img, im, txt, tm, return_attention=True).logits
        assert torch.isfinite(out).all()
        fast = MODEL(img, im, txt, tm).logits
        torch.testing.assert_close(fast, out, rtol=1e-4, atol=1e-5)
        padded = MODEL(
            torch.cat([img, 100 * torch.randn(b, pi, 6)], 1),
            torch.cat([im, torch.zeros(b, pi, dtype=torch.bool)], 1),
            torch.cat([txt, 100 * torch.randn(b, pt, 5)], 1),
            torch.cat([tm, torch.zeros(b, pt, dtype=torch.bool)], 1),
        ).logits
        torch.testing.assert_close(padded, out, rtol=1e-4, atol=1e-5)
        last = MODEL(img[-1:], im[-1:], txt[-1:], tm[-1:]).logits
        torch.testing.assert_close(last[0], out[-1], rtol=1e-4, atol=1e-5)
