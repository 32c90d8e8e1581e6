"""An offline, deterministic captioner that describes measured image statistics.

Why it exists: the text branch needs *some* caption for every image even when no VLM is available
(tests, CI, a laptop). Its sentences come only from pixel measurements (colours, a visible-band
vegetation index, a water-like fraction, brightness, edge density and orientation, periodicity), so
it never names a scene class and cannot leak labels. Every record says ``is_vlm: false``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from PIL import Image

from skyfuse.captioning.base import CAPTIONERS, Captioner, CaptionFailure, ImageJob
from skyfuse.captioning.prompts import Prompt
from skyfuse.data.images import decode_image
from skyfuse.errors import ImageDecodeError

#: Named reference colours (sRGB) used to describe dominant colours.
PALETTE: dict[str, tuple[int, int, int]] = {
    "dark green": (40, 70, 35),
    "green": (90, 130, 60),
    "light green": (150, 180, 110),
    "olive": (110, 110, 60),
    "brown": (110, 80, 55),
    "tan": (190, 165, 125),
    "beige": (215, 200, 170),
    "orange": (200, 120, 50),
    "red": (160, 50, 40),
    "dark grey": (60, 60, 60),
    "grey": (125, 125, 125),
    "light grey": (185, 185, 185),
    "white": (240, 240, 240),
    "black": (15, 15, 15),
    "dark blue": (30, 50, 90),
    "blue": (60, 110, 170),
    "turquoise": (70, 150, 150),
}

ANALYSIS_SIZE = 256
VERSION = "attributes-v1"


def _share_words(share: float) -> str:
    if share >= 0.75:
        return "most of"
    if share >= 0.45:
        return "about half of"
    if share >= 0.2:
        return "a sizeable part of"
    if share >= 0.05:
        return "a small part of"
    return "traces across"


def measure(img: Image.Image) -> dict[str, Any]:
    """The statistics the sentences are written from (also useful on their own)."""
    im = img.convert("RGB")
    im.thumbnail((ANALYSIS_SIZE, ANALYSIS_SIZE), Image.Resampling.BILINEAR)
    a = np.asarray(im, dtype=np.float32) / 255.0
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    lum = 0.299 * r + 0.587 * g + 0.114 * b
    total = r + g + b + 1e-6
    exg = (2 * g - r - b) / total  # excess-green on chromaticity: a visible-band vegetation index
    vari = (g - r) / (g + r - b + 1e-3)
    # green must also dominate red and blue, so turquoise water and grey-green sand do not count
    vegetation = float(np.mean((exg > 0.06) & (g > 0.12) & (g > r + 0.01) & (g > b + 0.01)))
    water = float(np.mean((b > r + 0.05) & (b >= g) & (lum < 0.55)))
    pal_names = list(PALETTE)
    pal = np.array([PALETTE[n] for n in pal_names], dtype=np.float32) / 255.0
    # nearest palette colour on every other pixel (shares do not need full resolution); a loop
    # over the 17 colours avoids a BLAS call, which is slow on a busy machine
    px = a[::2, ::2].reshape(-1, 3)
    dist = np.stack([((px - c) ** 2).sum(1) for c in pal], axis=1)
    idx = np.argmin(dist, axis=1)
    counts = np.bincount(idx, minlength=len(pal_names)) / len(idx)
    colours = [
        (pal_names[i], float(counts[i])) for i in np.argsort(-counts)[:3] if counts[i] > 0.08
    ]
    gy, gx = np.gradient(lum)
    mag = np.hypot(gx, gy)
    edges = mag > 0.06
    edge_density = float(edges.mean())
    # orientation of edges (structure tensor of the gradient), 0 deg = edges running left-right
    theta = (np.degrees(np.arctan2(gy, gx)) + 90.0) % 180.0
    bins = np.minimum((theta[edges] // 15).astype(np.int64), 11)
    hist = np.bincount(bins, weights=mag[edges], minlength=12)
    hist = hist / (hist.sum() + 1e-9)
    top = int(np.argmax(hist))
    perp = (top + 6) % 12
    coherence = float(hist[top] + hist[(top - 1) % 12] + hist[(top + 1) % 12])
    perp_share = float(hist[perp] + hist[(perp - 1) % 12] + hist[(perp + 1) % 12])
    # periodicity: strongest non-central peak of the autocorrelation of the edge map
    e = edges.astype(np.float32) - edges.mean()
    spec = np.abs(np.fft.rfft2(e)) ** 2
    ac = np.fft.irfft2(spec, s=e.shape)
    ac = np.fft.fftshift(ac) / (ac.flat[0] + 1e-9)
    cy, cx = ac.shape[0] // 2, ac.shape[1] // 2
    yy, xx = np.ogrid[: ac.shape[0], : ac.shape[1]]
    ring = ((yy - cy) ** 2 + (xx - cx) ** 2) >= 36
    periodic = float(ac[ring].max()) if edge_density > 0.02 else 0.0
    return {
        "brightness": float(lum.mean()),
        "contrast": float(lum.std()),
        "vegetation": vegetation,
        "vari": float(np.clip(np.median(vari), -1, 1)),
        "water": water,
        "colours": colours,
        "edge_density": edge_density,
        "orientation_deg": top * 15 + 7.5,
        "coherence": coherence,
        "cross_share": perp_share,
        "periodicity": periodic,
    }


def _direction(deg: float) -> str:
    if deg < 22.5 or deg >= 157.5:
        return "left to right"
    if deg < 67.5:
        return "diagonally (lower left to upper right)"
    if deg < 112.5:
        return "top to bottom"
    return "diagonally (upper left to lower right)"


def describe(m: dict[str, Any]) -> str:
    """Sentences from `measure` output; deterministic, never a scene-category word."""
    s: list[str] = []
    cols = m["colours"]
    if cols:
        names = [c for c, _ in cols]
        lead = f"The image is dominated by {names[0]} tones ({cols[0][1]:.0%})"
        if len(names) > 1:
            lead += ", with " + " and ".join(names[1:]) + " areas"
        s.append(lead + ".")
    if m["vegetation"] >= 0.03:
        s.append(
            f"Vegetation-like green cover spans {_share_words(m['vegetation'])} the image"
            f" (about {m['vegetation']:.0%})."
        )
    else:
        s.append("Almost no green vegetation is visible.")
    if m["water"] >= 0.05:
        s.append(f"Dark bluish surfaces that may be water cover about {m['water']:.0%}.")
    b = m["brightness"]
    tone = "bright" if b > 0.62 else "dark" if b < 0.3 else "moderately bright"
    contrast = "high" if m["contrast"] > 0.22 else "low" if m["contrast"] < 0.09 else "medium"
    s.append(f"Overall it is {tone} with {contrast} contrast.")
    ed = m["edge_density"]
    texture = (
        "dense, fine detail with many edges"
        if ed > 0.3
        else "moderate detail"
        if ed > 0.12
        else "few edges and large uniform surfaces"
    )
    s.append(f"The surface shows {texture}.")
    if ed > 0.04 and m["coherence"] > 0.45:
        s.append(f"Straight linear features run mostly {_direction(m['orientation_deg'])}.")
    # a grid needs two perpendicular families that hold most edge energy (uniform would be 50 %)
    if (
        ed > 0.04
        and min(m["coherence"], m["cross_share"]) > 0.3
        and (m["coherence"] + m["cross_share"] > 0.75)
    ):
        s.append("Lines cross at right angles, forming a grid.")
    if m["periodicity"] > 0.25:
        s.append("A regular, repeating pattern of similar shapes is present.")
    return " ".join(s)


@CAPTIONERS.register("attributes")
class AttributeCaptioner(Captioner):
    """Deterministic captions from pixel statistics; not a VLM."""

    backend: ClassVar[str] = "attributes"
    is_vlm = False
    uses_prompt: ClassVar[bool] = False
    thread_safe: ClassVar[bool] = True

    def __init__(self, batch_size: int = 8) -> None:
        self.model = VERSION
        self.batch_size = batch_size

    def params(self) -> dict[str, Any]:
        return {
            "analysis_size": ANALYSIS_SIZE,
            "provenance": "measured image statistics, not a VLM",
        }

    def caption_image(self, img: Image.Image) -> str:
        return describe(measure(img))

    def caption_batch(self, jobs: list[ImageJob], prompt: Prompt) -> list[str | CaptionFailure]:
        out: list[str | CaptionFailure] = []
        for job in jobs:
            try:
                img = decode_image(job.data, job.path)
            except ImageDecodeError as exc:
                out.append(CaptionFailure(exc.reason))
                continue
            out.append(self.caption_image(img))
        return out


def caption_pil(img: Image.Image) -> str:
    """Convenience for callers holding a PIL image (e.g. the server when no caption is given)."""
    return describe(measure(img))
