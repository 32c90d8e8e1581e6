from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from skyfuse.data.transforms import (
    center_crop,
    normalize,
    pil_to_tensor,
    preprocess_batch,
    preprocess_image,
    resize,
    resize_shorter,
)
from skyfuse.encoders.base import ImagePreprocess


def test_pil_to_tensor_layout() -> None:
    img = Image.new("RGB", (5, 3), (10, 20, 30))
    t = pil_to_tensor(img)
    assert t.shape == (3, 3, 5) and t.dtype == torch.uint8
    assert t[:, 0, 0].tolist() == [10, 20, 30]


def test_resize_shorter_keeps_aspect_and_crop_centres() -> None:
    x = torch.zeros(3, 100, 200)
    x[:, :, 90:110] = 1.0  # a vertical stripe in the middle
    r = resize_shorter(x, 50)
    assert r.shape == (3, 50, 100)
    c = center_crop(r, 50)
    assert c.shape == (3, 50, 50)
    assert c[0, 25, 25] > 0.5 and c[0, 25, 0] < 0.1


def test_center_crop_pads_small_images() -> None:
    assert center_crop(torch.ones(3, 10, 12), 16).shape == (3, 16, 16)


def test_normalize_per_channel() -> None:
    x = torch.full((3, 2, 2), 255.0)
    out = normalize(x, (0.5, 0.0, 1.0), (0.5, 1.0, 2.0))
    assert out[:, 0, 0].tolist() == pytest.approx([1.0, 1.0, 0.0])


@pytest.mark.parametrize("mode", ["shorter", "exact"])
def test_preprocess_follows_config(mode: str) -> None:
    cfg = ImagePreprocess(size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize_mode=mode)
    img = Image.fromarray(np.full((40, 80, 3), 255, dtype=np.uint8))
    out = preprocess_image(img, cfg)
    assert out.shape == (3, 32, 32)
    assert torch.allclose(out, torch.ones_like(out), atol=1e-4)  # white -> (1 - .5) / .5
    black = preprocess_image(Image.new("RGB", (40, 80)), cfg)
    assert torch.allclose(black, -torch.ones_like(black), atol=1e-4)
    assert preprocess_batch([img, img], cfg).shape == (2, 3, 32, 32)
    assert preprocess_batch([], cfg).shape == (0, 3, 32, 32)


def test_exact_squashes_while_shorter_crops() -> None:
    arr = np.zeros((20, 60, 3), dtype=np.uint8)
    arr[:, :10] = 255  # white band on the left edge
    img = Image.fromarray(arr)
    squashed = preprocess_image(img, ImagePreprocess(20, (0, 0, 0), (1, 1, 1), "exact"))
    cropped = preprocess_image(img, ImagePreprocess(20, (0, 0, 0), (1, 1, 1), "shorter"))
    assert squashed[0, 10, 0] > 0.9  # band kept (squeezed)
    assert cropped[0, 10, 0] < 0.1  # band cropped away


def test_bicubic_stays_in_range() -> None:
    x = torch.zeros(3, 40, 40)
    x[:, ::2] = 255.0  # stripes make bicubic overshoot without the clamp
    out = resize(x, (17, 17), "bicubic")
    assert out.shape == (3, 17, 17) and float(out.min()) >= 0.0 and float(out.max()) <= 255.0
    with pytest.raises(ValueError, match="interpolation"):
        resize(x, (8, 8), "nearest-ish")
