"""PaperFusion: the published compute, including its batch-mixing self-attention when asked."""

from __future__ import annotations

import torch

from skyfuse.models.reference import PaperFusion


def _inputs(b: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(b, 9, 768, generator=g), torch.randn(b, 7, 512, generator=g)


def test_shapes_and_size_match_the_paper() -> None:
    model = PaperFusion(num_classes=30)
    img, txt = _inputs()
    logits = model(img, txt)
    assert logits.shape == (4, 30)
    logits.sum().backward()
    n = sum(p.numel() for p in model.parameters())
    assert 4_500_000 < n < 5_500_000  # "about 5 M parameters in the fusion"
    assert model.classifier.in_features == 1280


def test_seq_first_bug_mixes_samples_and_the_fix_does_not() -> None:
    img, txt = _inputs()
    for bug, mixes in [(True, True), (False, False)]:
        torch.manual_seed(0)
        model = PaperFusion(num_classes=3, seq_first_bug=bug).eval()
        with torch.no_grad():
            together = model(img, txt)[0]
            alone = model(img[:1], txt[:1])[0]
        assert (not torch.allclose(together, alone, atol=1e-5)) == mixes
