"""Robust image decoding to RGB.

Why a module of its own: scene folders in the wild mix JPEG, PNG, WebP, BMP and TIFF, including 16-bit
and multiband GeoTIFF-like files, and some files are corrupt or hostile (decompression bombs). Every
reader in skyfuse goes through `load_image`, so the rules below hold everywhere.

Conversion rule to 8-bit RGB (documented in docs/data.md):
- EXIF orientation is applied.
- 1 band: grey, replicated to R, G, B. 2 bands: the first is used as grey.
- 3 bands: taken as R, G, B. 4 bands: R, G, B, NIR (or alpha), the 4th is dropped.
- 5-12 bands: the first three are taken as R, G, B unless `bands` says otherwise.
- 13 or more bands: Sentinel-2 order is assumed (B1..B12, B8A), true colour = bands 4, 3, 2.
- Integer data wider than 8 bits and float data: each channel is stretched linearly between its
  2nd and 98th percentiles to 0..255 (the usual display stretch in remote sensing).
"""

from __future__ import annotations

import hashlib
import io
import math
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from skyfuse.errors import ImageDecodeError

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp"}
)
TIFF_EXTENSIONS: frozenset[str] = frozenset({".tif", ".tiff"})

#: Default pixel-count limit (width x height; for TIFFs bands x height x width, the samples the decoder
#: allocates). 16k x 16k is far above any scene-classification tile and far below what would exhaust
#: memory; raise it per call for large orthophotos.
DEFAULT_MAX_PIXELS = 16384 * 16384

SENTINEL2_RGB = (3, 2, 1)


def is_image_file(path: Path) -> bool:
    """True for a visible file with an image extension (content is not checked here)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stretch_to_uint8(channel: np.ndarray, low: float = 2.0, high: float = 98.0) -> np.ndarray:
    """Linear percentile stretch of one channel to 0..255."""
    values = channel.astype(np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(channel.shape, dtype=np.uint8)
    lo, hi = np.percentile(finite, [low, high])
    if hi <= lo:
        hi = lo + 1.0
    out = (np.nan_to_num(values, nan=lo) - lo) / (hi - lo)
    return (np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def array_to_rgb(arr: np.ndarray, bands: Sequence[int] | None = None) -> Image.Image:
    """Convert an (H, W) or (H, W, C) array of any dtype to an 8-bit RGB image by the module rule."""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ValueError(f"expected a 2-D or 3-D pixel array, got shape {arr.shape}")
    n = arr.shape[2]
    if bands is not None:
        if len(bands) != 3 or max(bands) >= n or min(bands) < 0:
            raise ValueError(f"bands={tuple(bands)} does not fit an image with {n} bands")
        chans = list(bands)
    elif n <= 2:
        chans = [0, 0, 0]
    elif n >= 13:
        chans = list(SENTINEL2_RGB)
    else:
        chans = [0, 1, 2]
    rgb = arr[:, :, chans]
    if rgb.dtype == np.uint8:
        out = rgb
    else:
        out = np.stack([stretch_to_uint8(rgb[:, :, i]) for i in range(3)], axis=2)
    return Image.fromarray(np.ascontiguousarray(out), mode="RGB")


def _load_tiff_array(data: bytes, path: Path, max_pixels: int) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        page = tif.pages[0]
        shape = tuple(int(d) for d in page.shape)  # type: ignore[union-attr]
        # every sample of every band is allocated: planar (C, H, W) or contiguous (H, W, C)
        _check_samples(path, shape, max_pixels)
        arr = page.asarray()  # type: ignore[union-attr]
        planar = getattr(page, "planarconfig", None)
    if arr.ndim == 3 and (planar == 2 or (arr.shape[0] < arr.shape[2] and arr.shape[0] <= 16)):
        arr = np.moveaxis(arr, 0, -1)
    return np.asarray(arr)


def _check_samples(path: Path, shape: Sequence[int], max_pixels: int) -> None:
    """Refuse a raster whose samples (bands x height x width) exceed `max_pixels`."""
    total = math.prod(max(1, int(d)) for d in shape)
    if total > max_pixels:
        dims = "x".join(str(d) for d in shape)
        raise ImageDecodeError(
            path,
            f"{dims} = {total} samples exceeds the limit of {max_pixels} (bands x height x width;"
            " possible decompression bomb); raise max_pixels if the file is trusted",
        )


def _open_unchecked(data: bytes) -> Image.Image:
    """`Image.open` without Pillow's process-wide MAX_IMAGE_PIXELS check, which `decode_image`
    replaces by its own per-call limit: the global is never changed, so no thread can see another
    thread's limit (Pillow's guards while decoding frames still apply)."""
    fp = io.BytesIO(data)
    prefix = data[:16]
    tried: set[str] = set()
    for loader in (Image.preinit, Image.init):
        loader()
        for fmt in list(Image.ID):
            if fmt in tried or fmt not in Image.OPEN:
                continue
            tried.add(fmt)
            factory, accept = Image.OPEN[fmt]
            ok = True if accept is None else accept(prefix)
            if not ok or isinstance(ok, str):
                continue
            fp.seek(0)
            try:
                return factory(fp, "")
            except (SyntaxError, IndexError, TypeError, struct.error):
                continue
    raise UnidentifiedImageError("cannot identify image file")


def _tiff_bands(img: Image.Image) -> int:
    """Samples per pixel of a TIFF (its SamplesPerPixel tag, else the mode's band count)."""
    tags = getattr(img, "tag_v2", None)
    spp = tags.get(277) if tags is not None else None
    if isinstance(spp, tuple):
        spp = spp[0] if spp else None
    try:
        return max(1, int(spp)) if spp is not None else len(img.getbands())
    except (TypeError, ValueError):
        return len(img.getbands())


def _tiff_needs_array(img: Image.Image) -> bool:
    """True when Pillow would silently squeeze a TIFF to 8 bits (16-bit, float) or drop bands.

    Pillow opens a 16-bit RGB TIFF as mode RGB by keeping the high byte, which loses the stretch the
    module rule promises, so such files go through tifffile instead.
    """
    tags = getattr(img, "tag_v2", None)
    if tags is None:
        return False
    bits = tags.get(258, 8)
    bits = max(bits) if isinstance(bits, tuple) else int(bits)
    fmt = tags.get(339, 1)
    fmt = max(fmt) if isinstance(fmt, tuple) else int(fmt)
    return bits > 8 or fmt == 3 or int(tags.get(277, 1)) > 4


def decode_image(
    data: bytes,
    path: str | Path = "<bytes>",
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    bands: Sequence[int] | None = None,
) -> Image.Image:
    """Decode image bytes to an 8-bit RGB PIL image, or raise `ImageDecodeError` with the reason."""
    path = Path(path)
    if not data:
        raise ImageDecodeError(
            path, "file is empty (0 bytes); delete it or replace it with the image"
        )
    try:
        img: Image.Image = _open_unchecked(data)
        w, h = img.size
        if w * h > max_pixels:
            raise ImageDecodeError(
                path,
                f"{w}x{h} pixels exceeds the limit of {max_pixels} (possible decompression bomb);"
                " raise max_pixels if the file is trusted",
            )
        source_format = img.format  # exif_transpose returns a copy without it
        if source_format == "TIFF":
            _check_samples(path, (_tiff_bands(img), h, w), max_pixels)
        if source_format == "TIFF" and (bands is not None or _tiff_needs_array(img)):
            return array_to_rgb(_load_tiff_array(data, path, max_pixels), bands)
        img = ImageOps.exif_transpose(img) or img
        simple = img.mode in {"RGB", "RGBA", "L", "P", "LA", "CMYK", "YCbCr", "1"}
        if simple and bands is None:
            if img.mode in {"RGBA", "LA", "P"}:
                img = img.convert("RGBA").convert("RGB")
            return img.convert("RGB")
        if source_format == "TIFF" or path.suffix.lower() in TIFF_EXTENSIONS:
            return array_to_rgb(_load_tiff_array(data, path, max_pixels), bands)
        return array_to_rgb(np.asarray(img), bands)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        if path.suffix.lower() in TIFF_EXTENSIONS:
            try:
                return array_to_rgb(_load_tiff_array(data, path, max_pixels), bands)
            except ImageDecodeError:
                raise
            except Exception:
                pass
        raise ImageDecodeError(
            path, "not a readable image (wrong extension or corrupt); delete or re-export it"
        ) from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "truncated" in reason.lower() or "image file is truncated" in reason.lower():
            reason = "truncated file; re-download or re-export it"
        else:
            reason = f"cannot decode ({reason}); re-export it or remove it"
        raise ImageDecodeError(path, reason) from None


def load_image(
    path: str | Path,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    bands: Sequence[int] | None = None,
) -> Image.Image:
    """Read and decode one image file to 8-bit RGB; failures raise `ImageDecodeError`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except PermissionError:
        raise ImageDecodeError(path, "permission denied; fix the file's permissions") from None
    except IsADirectoryError:
        raise ImageDecodeError(path, "is a folder, not an image") from None
    except OSError as exc:
        raise ImageDecodeError(path, f"cannot read ({exc.strerror or exc})") from None
    return decode_image(data, path, max_pixels=max_pixels, bands=bands)
