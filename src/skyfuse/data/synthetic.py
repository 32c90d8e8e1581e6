"""Procedural aerial-like scenes for the offline demo and for tests.

Why: the demo and the test suite must run without downloading a dataset. These scenes are drawn with
numpy from a few primitives (fractal noise, rotated stripes, rotated grids of rectangles, roads) with
random geometry, colour, orientation, haze and sensor noise, so that classes overlap somewhat (meadow vs
forest, beach vs desert, dense residential vs parking lot) and a classifier has to use texture and layout,
not only mean colour. Every image depends only on ``(seed, class name, index)``: the same call writes the
same files, and adding a class does not change the others.

The output is a normal plain scene folder (``root/<class>/<class>_NNNN.jpg``) with a ``SYNTHETIC.md``
marker at the root, so that nothing derived from it can be mistaken for real imagery.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from skyfuse.errors import ConfigError

#: Name of the marker file written at the root of every synthetic folder.
SYNTHETIC_MARKER = "SYNTHETIC.md"
GENERATOR_VERSION = 1

Array = np.ndarray
Painter = Callable[[np.random.Generator, int], Array]


# --------------------------------------------------------------------------- primitives


def _noise(rng: np.random.Generator, size: int, cells: int) -> Array:
    """Smooth value noise in [0, 1]: a random ``cells x cells`` grid upsampled bicubically."""
    cells = max(2, cells)
    grid = rng.random((cells, cells), dtype=np.float32)
    img = Image.fromarray(grid, mode="F").resize((size, size), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)


def _fractal(rng: np.random.Generator, size: int, base: int = 4, octaves: int = 4) -> Array:
    """Sum of noise octaves, normalised to [0, 1]."""
    out = np.zeros((size, size), np.float32)
    amp, total = 1.0, 0.0
    for k in range(octaves):
        out += amp * _noise(rng, size, base * 2**k)
        total += amp
        amp *= 0.5
    out /= total
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / max(hi - lo, 1e-6)


def _coords(rng: np.random.Generator, size: int, angle: float | None = None) -> tuple[Array, Array]:
    """Pixel coordinates rotated by a random (or given) angle about a random centre."""
    theta = rng.uniform(0, np.pi) if angle is None else angle
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    cx, cy = rng.uniform(0, size, 2)
    c, s = np.cos(theta), np.sin(theta)
    u = (x - cx) * c + (y - cy) * s
    v = -(x - cx) * s + (y - cy) * c
    return u, v


def _jitter(rng: np.random.Generator, rgb: Sequence[float], amount: float = 0.06) -> Array:
    """A colour near ``rgb``: mostly a shared brightness change, a little hue drift."""
    shift = rng.normal(0, amount) + rng.normal(0, amount / 2.5, 3)
    return np.clip(np.asarray(rgb, np.float32) + shift, 0.0, 1.0).astype(np.float32)


def _fill(size: int, rgb: Array) -> Array:
    return np.broadcast_to(rgb, (size, size, 3)).astype(np.float32).copy()


def _shade(img: Array, tex: Array, strength: float) -> Array:
    """Modulate brightness by a texture in [0, 1]."""
    return img * (1.0 - strength / 2 + strength * tex[..., None])


def _blend(img: Array, mask: Array, rgb: Array | Array) -> Array:
    m = mask.astype(np.float32)[..., None]
    return img * (1 - m) + m * rgb


def _cell_table(rng: np.random.Generator, n: int = 64) -> Array:
    return rng.random((n, n), dtype=np.float32)


def _cell_lookup(table: Array, iu: Array, iv: Array) -> Array:
    n = table.shape[0]
    return table[np.mod(iu, n), np.mod(iv, n)]


def _grid_boxes(
    u: Array, v: Array, pitch_u: float, pitch_v: float, fill_u: float, fill_v: float
) -> tuple[Array, Array, Array]:
    """Rectangles on a rotated grid: (inside mask, cell index u, cell index v)."""
    iu = np.floor(u / pitch_u).astype(np.int64)
    iv = np.floor(v / pitch_v).astype(np.int64)
    fu = u / pitch_u - iu
    fv = v / pitch_v - iv
    inside = (np.abs(fu - 0.5) < fill_u / 2) & (np.abs(fv - 0.5) < fill_v / 2)
    return inside, iu, iv


def _road(v: Array, offset: float, width: float) -> tuple[Array, Array]:
    """A straight road along u: (asphalt mask, centre-line mask)."""
    d = np.abs(v - offset)
    return d < width / 2, d < max(0.6, width / 14)


# --------------------------------------------------------------------------- class painters


def _ground(rng: np.random.Generator, size: int, rgb: Sequence[float], strength: float) -> Array:
    img = _fill(size, _jitter(rng, rgb))
    return _shade(img, _fractal(rng, size, base=int(rng.integers(3, 8))), strength)


def _paint_forest(rng: np.random.Generator, size: int) -> Array:
    img = _ground(rng, size, (0.16, 0.30, 0.14), 0.5)
    crowns = _noise(rng, size, size // int(rng.integers(3, 6)))
    img = _shade(img, crowns, rng.uniform(0.6, 1.0))
    if rng.random() < 0.35:  # a clearing or a track
        clearing = _fractal(rng, size, base=3) > rng.uniform(0.7, 0.85)
        img = _blend(img, clearing, _jitter(rng, (0.35, 0.42, 0.22)))
    return img


def _paint_meadow(rng: np.random.Generator, size: int) -> Array:
    img = _ground(rng, size, (0.38, 0.50, 0.24), 0.35)
    if rng.random() < 0.5:  # scattered trees
        trees = _noise(rng, size, size // 3) > rng.uniform(0.8, 0.9)
        img = _blend(img, trees, _jitter(rng, (0.15, 0.28, 0.12)))
    return img


def _paint_water(rng: np.random.Generator, size: int) -> Array:
    img = _ground(rng, size, (0.10, 0.22, 0.32), 0.25)
    u, _ = _coords(rng, size)
    waves = 0.5 + 0.5 * np.sin(u * rng.uniform(0.4, 1.2) + 3 * _noise(rng, size, 6))
    img = _shade(img, waves, rng.uniform(0.03, 0.12))
    if rng.random() < 0.5:  # a shore on one side
        _, v = _coords(rng, size)
        shore = (v + 12 * _fractal(rng, size, base=3)) > rng.uniform(0.3, 0.6) * size
        img = _blend(img, shore, _ground(rng, size, (0.32, 0.42, 0.24), 0.5))
    return img


def _paint_farmland(rng: np.random.Generator, size: int) -> Array:
    u, v = _coords(rng, size)
    warp = 6 * _noise(rng, size, 3)
    pitch = rng.uniform(0.3, 0.7) * size
    inside, iu, iv = _grid_boxes(
        u + warp, v + warp, pitch, pitch * rng.uniform(0.5, 1.5), 0.96, 0.96
    )
    palette = np.array(
        [[0.45, 0.55, 0.25], [0.65, 0.60, 0.35], [0.50, 0.40, 0.28], [0.30, 0.45, 0.20]], np.float32
    )
    pick = (_cell_lookup(_cell_table(rng), iu, iv) * len(palette)).astype(np.int64)
    img = palette[pick] + rng.normal(0, 0.05, 3).astype(np.float32)
    freq = rng.uniform(0.6, 1.6)
    stripes = 0.5 + 0.5 * np.sin((u + warp) * freq + _cell_lookup(_cell_table(rng), iu, iv) * 6)
    img = _shade(img, stripes, rng.uniform(0.15, 0.35))
    img = _blend(img, ~inside, _jitter(rng, (0.35, 0.33, 0.28)))
    return _shade(img, _fractal(rng, size), 0.2)


def _houses(
    rng: np.random.Generator,
    size: int,
    img: Array,
    pitch: float,
    fill: float,
    density: float,
) -> Array:
    u, v = _coords(rng, size)
    inside, iu, iv = _grid_boxes(u, v, pitch, pitch * rng.uniform(0.8, 1.3), fill, fill * 0.8)
    present = _cell_lookup(_cell_table(rng), iu, iv) < density
    roofs = np.array(
        [[0.62, 0.30, 0.25], [0.55, 0.55, 0.55], [0.40, 0.32, 0.30], [0.75, 0.72, 0.68]], np.float32
    )
    pick = (_cell_lookup(_cell_table(rng), iu, iv) * len(roofs)).astype(np.int64)
    roof = roofs[pick] + rng.normal(0, 0.05, 3).astype(np.float32)
    # a ridge line: the two halves of a pitched roof catch light differently
    half = (np.mod(v / (pitch * 0.9), 1.0) > 0.5).astype(np.float32)[..., None]
    roof = roof * (0.9 + 0.15 * half)
    return _blend(img, inside & present, roof)


def _paint_dense_residential(rng: np.random.Generator, size: int) -> Array:
    img = _ground(rng, size, (0.45, 0.44, 0.42), 0.3)
    img = _houses(
        rng, size, img, rng.uniform(9, 15), rng.uniform(0.7, 0.85), rng.uniform(0.8, 0.97)
    )
    return img


def _paint_sparse_residential(rng: np.random.Generator, size: int) -> Array:
    img = _ground(rng, size, (0.35, 0.46, 0.25), 0.45)
    img = _houses(
        rng, size, img, rng.uniform(16, 28), rng.uniform(0.35, 0.55), rng.uniform(0.2, 0.5)
    )
    if rng.random() < 0.7:
        _, v = _coords(rng, size)
        asphalt, _ = _road(v, rng.uniform(-0.3, 0.3) * size, rng.uniform(3, 6))
        img = _blend(img, asphalt, _jitter(rng, (0.38, 0.38, 0.38)))
    return img


def _paint_road_crossing(rng: np.random.Generator, size: int) -> Array:
    img = _ground(rng, size, (0.40, 0.45, 0.30), 0.45)
    theta = rng.uniform(0, np.pi)
    asphalt_rgb = _jitter(rng, (0.30, 0.30, 0.31))
    paint = _jitter(rng, (0.9, 0.9, 0.85), 0.03)
    for angle in (theta, theta + np.pi / 2 + rng.normal(0, 0.2)):
        u, v = _coords(rng, size, angle)
        width = rng.uniform(8, 18)
        asphalt, centre = _road(v, rng.uniform(-0.15, 0.15) * size, width)
        dashes = np.mod(u, 10) < 5
        img = _blend(img, asphalt, asphalt_rgb)
        img = _blend(img, centre & dashes, paint)
    if rng.random() < 0.5:
        img = _houses(rng, size, img, rng.uniform(18, 26), 0.4, rng.uniform(0.1, 0.3))
    return img


def _paint_beach(rng: np.random.Generator, size: int) -> Array:
    _, v = _coords(rng, size)
    edge = v + rng.uniform(6, 16) * (_fractal(rng, size, base=3) - 0.5)
    limit = rng.uniform(-0.25, 0.25) * size
    sand = _ground(rng, size, (0.80, 0.72, 0.55), 0.25)
    sea = _ground(rng, size, (0.15, 0.38, 0.48), 0.25)
    img = _blend(sand, edge > limit, sea)
    surf = np.abs(edge - limit) < rng.uniform(1.0, 3.5)
    return _blend(img, surf & (edge > limit - 1), _jitter(rng, (0.92, 0.93, 0.92), 0.03))


def _paint_desert(rng: np.random.Generator, size: int) -> Array:
    img = _ground(rng, size, (0.78, 0.66, 0.48), 0.3)
    u, _ = _coords(rng, size)
    warp = rng.uniform(8, 25) * _fractal(rng, size, base=3)
    dunes = 0.5 + 0.5 * np.sin((u + warp) * rng.uniform(0.08, 0.3))
    return _shade(img, dunes, rng.uniform(0.15, 0.4))


def _paint_bare_land(rng: np.random.Generator, size: int) -> Array:
    img = _ground(rng, size, (0.60, 0.52, 0.42), 0.45)
    tracks = _coords(rng, size)[1]
    track = np.abs(tracks + 5 * _noise(rng, size, 4)) < rng.uniform(0.8, 2.0)
    return _blend(img, track & (rng.random() < 0.6), _jitter(rng, (0.72, 0.66, 0.56)))


def _paint_parking_lot(rng: np.random.Generator, size: int) -> Array:
    img = _ground(rng, size, (0.42, 0.42, 0.43), 0.2)
    u, v = _coords(rng, size)
    car_w, car_l = rng.uniform(3, 5), rng.uniform(6, 9)
    inside, iu, iv = _grid_boxes(u, v, car_w * 1.5, car_l * 1.25, 0.68, 0.8)
    aisle = np.mod(iv, 3) == 2  # two rows of cars, then a driving aisle
    occupied = _cell_lookup(_cell_table(rng), iu, iv) < rng.uniform(0.4, 0.95)
    palette = np.array(
        [[0.9, 0.9, 0.9], [0.1, 0.1, 0.12], [0.6, 0.1, 0.1], [0.2, 0.3, 0.6], [0.6, 0.6, 0.62]],
        np.float32,
    )
    pick = (_cell_lookup(_cell_table(rng), iu, iv) * len(palette)).astype(np.int64)
    img = _blend(img, inside & occupied & ~aisle, palette[pick])
    lines = (np.abs(np.mod(u / (car_w * 1.5), 1.0) - 0.0) < 0.06) & ~aisle
    return _blend(img, lines, _jitter(rng, (0.85, 0.85, 0.8), 0.03))


_PAINTERS: dict[str, Painter] = {
    "bare_land": _paint_bare_land,
    "beach": _paint_beach,
    "dense_residential": _paint_dense_residential,
    "desert": _paint_desert,
    "farmland": _paint_farmland,
    "forest": _paint_forest,
    "meadow": _paint_meadow,
    "parking_lot": _paint_parking_lot,
    "road_crossing": _paint_road_crossing,
    "sparse_residential": _paint_sparse_residential,
    "water": _paint_water,
}

#: The synthetic classes, sorted (the class index of a folder written with all of them).
SYNTHETIC_CLASSES: tuple[str, ...] = tuple(sorted(_PAINTERS))


def _finish(rng: np.random.Generator, img: Array) -> Array:
    """Global photometric variation: exposure, haze, per-image colour cast and sensor noise."""
    img = img * rng.uniform(0.75, 1.25) + rng.normal(0, 0.025, 3).astype(np.float32)
    haze = rng.uniform(0.0, 0.25)
    img = img * (1 - haze) + haze * np.float32(0.7)
    img = img + rng.normal(0, rng.uniform(0.01, 0.04), img.shape).astype(np.float32)
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _class_seed(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little")


def render_scene(class_name: str, index: int, *, size: int = 128, seed: int = 0) -> Array:
    """One synthetic scene as an (size, size, 3) uint8 array; pure function of its arguments."""
    try:
        painter = _PAINTERS[class_name]
    except KeyError:
        raise ConfigError(
            f"unknown synthetic class {class_name!r}; known: {', '.join(SYNTHETIC_CLASSES)}"
        ) from None
    if size < 16:
        raise ConfigError(f"synthetic image size {size} is too small; use 16 or more")
    rng = np.random.default_rng([_class_seed(seed, class_name), index])
    # paint at a random ground resolution, then resample, so object scale varies like real imagery
    work = int(size * rng.uniform(0.8, 1.25))
    img = _finish(rng, painter(rng, work))
    if work != size:
        img = np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR))
    if rng.random() < 0.5:
        img = img[:, ::-1]
    return np.ascontiguousarray(np.rot90(img, int(rng.integers(0, 4))))


def _marker_text(classes: Sequence[str], per_class: int, size: int, seed: int) -> str:
    meta = {
        "generator": "skyfuse.data.synthetic",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "per_class": per_class,
        "size": size,
        "classes": list(classes),
    }
    return (
        "# SYNTHETIC scenes: not real imagery\n\n"
        "Every image in this folder was drawn procedurally by `skyfuse.data.synthetic` (numpy), for the\n"
        "offline demo and tests. Results measured on it say nothing about real remote sensing data.\n\n"
        f"```json\n{json.dumps(meta, indent=2)}\n```\n"
    )


def is_synthetic(root: Path) -> bool:
    """True when ``root`` was written by `make_synthetic_dataset` (so reports can label it)."""
    return (Path(root) / SYNTHETIC_MARKER).is_file()


def make_synthetic_dataset(
    root: Path,
    *,
    per_class: int = 40,
    size: int = 128,
    seed: int = 0,
    classes: Sequence[str] | None = None,
    image_format: str = "jpg",
) -> Path:
    """Write a plain scene folder of synthetic scenes plus a ``SYNTHETIC.md`` marker; returns ``root``.

    Files are named ``<class>/<class>_NNNN.<ext>``; existing files of the same name are overwritten so a
    re-run with the same arguments reproduces the folder.
    """
    root = Path(root)
    names = list(SYNTHETIC_CLASSES if classes is None else classes)
    unknown = [c for c in names if c not in _PAINTERS]
    if unknown:
        raise ConfigError(
            f"unknown synthetic class(es) {', '.join(unknown)}; known: {', '.join(SYNTHETIC_CLASSES)}"
        )
    if len(set(names)) != len(names) or not names:
        raise ConfigError("synthetic classes must be a non-empty list without repeats")
    if per_class < 1:
        raise ConfigError(f"per_class must be at least 1, got {per_class}")
    fmt = image_format.lower().lstrip(".")
    save_kw: dict[str, dict[str, Any]] = {
        "jpg": {"format": "JPEG", "quality": 90},
        "png": {"format": "PNG"},
    }
    if fmt not in save_kw:
        raise ConfigError(f"synthetic image format {image_format!r} not supported; use jpg or png")
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        folder = root / name
        folder.mkdir(exist_ok=True)
        for i in range(per_class):
            pixels = render_scene(name, i, size=size, seed=seed)
            Image.fromarray(pixels, mode="RGB").save(
                folder / f"{name}_{i:04d}.{fmt}", **save_kw[fmt]
            )
    (root / SYNTHETIC_MARKER).write_text(
        _marker_text(names, per_class, size, seed), encoding="utf-8"
    )
    return root


__all__ = [
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_MARKER",
    "is_synthetic",
    "make_synthetic_dataset",
    "render_scene",
]
