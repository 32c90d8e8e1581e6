"""The preprocessing spec of an image encoder: input size, resize mode, normalisation.

It lives in the data layer because both sides use it: the encoders declare it (``preprocess_cfg``) and
the data layer (`skyfuse.data.transforms`, the pixel cache) applies it, without the data layer knowing
any encoder. `skyfuse.encoders.base` re-exports it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ImagePreprocess:
    """Preprocessing that travels with an image encoder (never hard-coded elsewhere).

    resize_mode: "shorter" (resize the shorter side to `size`, then centre-crop) or "exact" (squash to
    size x size, as Hugging Face ViT processors do); interpolation: "bilinear" or "bicubic".
    """

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_mode: str = "shorter"
    interpolation: str = "bilinear"

    def describe(self) -> str:
        """A short stable string, part of the encoder id (preprocessing changes the features)."""
        mean = ",".join(f"{v:g}" for v in self.mean)
        std = ",".join(f"{v:g}" for v in self.std)
        interp = "" if self.interpolation == "bilinear" else f"-{self.interpolation}"
        return f"{self.size}{self.resize_mode[0]}-m{mean}-s{std}{interp}"
