"""Image preprocessing in plain torch (no torchvision): to tensor, resize, centre crop, normalise.

Why our own: torchvision pulls a CUDA build of torch into a CPU install, and every encoder's
preprocessing must come from that encoder's config (the published code normalised a mean = std = 0.5
encoder with CLIP statistics). An `ImagePreprocess` from the encoder drives `preprocess_image`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from skyfuse.data.preprocess import ImagePreprocess


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> uint8 tensor (3, H, W)."""
    arr = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def resize(
    pixels: torch.Tensor, size: tuple[int, int], interpolation: str = "bilinear"
) -> torch.Tensor:
    """Antialiased resize of a (C, H, W) or (B, C, H, W) tensor to `size` = (h, w); float out.

    `interpolation` is "bilinear" or "bicubic" (bicubic output is clamped to the input range)."""
    single = pixels.dim() == 3
    x = pixels.unsqueeze(0) if single else pixels
    x = x.float()
    if interpolation not in ("bilinear", "bicubic"):
        raise ValueError(f"interpolation must be bilinear or bicubic, got {interpolation!r}")
    if tuple(x.shape[-2:]) != tuple(size):
        lo, hi = x.amin(), x.amax()
        x = F.interpolate(x, size=size, mode=interpolation, antialias=True, align_corners=False)
        if interpolation == "bicubic":
            x = x.clamp(lo, hi)
    return x.squeeze(0) if single else x


def resize_shorter(
    pixels: torch.Tensor, size: int, interpolation: str = "bilinear"
) -> torch.Tensor:
    """Resize so the shorter side is `size`, keeping the aspect ratio (rounded)."""
    h, w = pixels.shape[-2:]
    scale = size / min(h, w)
    new = (max(size, round(h * scale)), max(size, round(w * scale)))
    return resize(pixels, new, interpolation)


def center_crop(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """Central `size` x `size` window; pads with zeros when the image is smaller."""
    h, w = pixels.shape[-2:]
    if h < size or w < size:
        ph, pw = max(0, size - h), max(0, size - w)
        pixels = F.pad(pixels, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        h, w = pixels.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return pixels[..., top : top + size, left : left + size]


def normalize(
    pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float], scale: float = 1 / 255
) -> torch.Tensor:
    """(x * scale - mean) / std per channel, for (C, H, W) or (B, C, H, W)."""
    shape = (-1, 1, 1)
    m = torch.tensor(mean, dtype=torch.float32).view(shape)
    s = torch.tensor(std, dtype=torch.float32).view(shape)
    return (pixels.float() * scale - m) / s


def preprocess_image(image: Image.Image, cfg: ImagePreprocess) -> torch.Tensor:
    """One PIL image -> normalised float tensor (3, size, size) following the encoder's config.

    `cfg.resize_mode == "shorter"` resizes the shorter side then centre-crops (keeps aspect);
    `"exact"` squashes to size x size, as Hugging Face ViT processors do.
    """
    x = pil_to_tensor(image)
    if cfg.resize_mode == "exact":
        x = resize(x, (cfg.size, cfg.size), cfg.interpolation)
    else:
        x = center_crop(resize_shorter(x, cfg.size, cfg.interpolation), cfg.size)
    return normalize(x, cfg.mean, cfg.std)


def preprocess_batch(images: Sequence[Image.Image], cfg: ImagePreprocess) -> torch.Tensor:
    """A list of PIL images -> (B, 3, size, size) float tensor."""
    if not images:
        return torch.empty(0, 3, cfg.size, cfg.size)
    return torch.stack([preprocess_image(im, cfg) for im in images])


__all__ = [
    "center_crop",
    "normalize",
    "pil_to_tensor",
    "preprocess_batch",
    "preprocess_image",
    "resize",
    "resize_shorter",
]
