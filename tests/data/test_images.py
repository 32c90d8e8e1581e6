"""Image decoding: every supported format, the RGB conversion rule, EXIF, bombs, broken files."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import tifffile
from PIL import Image

from skyfuse.data.images import decode_image, load_image
from skyfuse.errors import ImageDecodeError
from tests.data.helpers import jpeg_bytes, png_header_bomb, write_image


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".bmp", ".tif"])
def test_formats_decode_to_rgb(tmp_path: Path, suffix: str) -> None:
    path = write_image(tmp_path / f"a{suffix}", size=(20, 12))
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (20, 12)


def test_16bit_tiff_is_stretched(tmp_path: Path) -> None:
    arr = np.linspace(1000, 4000, 16 * 16 * 3).reshape(16, 16, 3).astype(np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", arr)
    img = np.asarray(load_image(tmp_path / "a.tif"))
    assert img.dtype == np.uint8 and img.shape == (16, 16, 3)
    assert img.min() == 0 and img.max() == 255  # percentile stretch fills the 8-bit range


def test_multiband_tiff_rules(tmp_path: Path) -> None:
    five = np.zeros((8, 8, 5), np.uint8)
    five[..., 0], five[..., 1], five[..., 2], five[..., 3] = 10, 20, 30, 200
    tifffile.imwrite(tmp_path / "five.tif", five, planarconfig="contig")
    assert tuple(np.asarray(load_image(tmp_path / "five.tif"))[0, 0]) == (10, 20, 30)
    s2 = np.stack(
        [np.full((8, 8), i * 100, np.uint16) + np.arange(8, dtype=np.uint16) for i in range(13)]
    )
    tifffile.imwrite(
        tmp_path / "s2.tif", s2
    )  # planar (13, H, W): Sentinel-2 order, RGB = B4, B3, B2
    img = np.asarray(load_image(tmp_path / "s2.tif"))
    assert img.shape == (8, 8, 3)
    chosen = load_image(tmp_path / "five.tif", bands=(3, 2, 1))
    assert tuple(np.asarray(chosen)[0, 0]) == (200, 30, 20)


def test_16bit_png_grey(tmp_path: Path) -> None:
    arr = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 900).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / "g.png")
    img = load_image(tmp_path / "g.png")
    assert img.mode == "RGB" and img.size == (8, 8)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    img.save(tmp_path / "o.jpg", exif=exif.tobytes())
    assert load_image(tmp_path / "o.jpg").size == (20, 40)


def test_decompression_bomb_refused(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_bomb(30000, 30000))
    with pytest.raises(ImageDecodeError, match=r"bomb\.png.*exceeds the limit.*decompression bomb"):
        load_image(path)
    small = write_image(tmp_path / "s.png", size=(40, 40))
    with pytest.raises(ImageDecodeError, match="exceeds"):
        load_image(small, max_pixels=1000)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty"),
        (b"hello, I am text\n" * 10, "not a readable image"),
        (jpeg_bytes()[:300], "truncated|cannot decode"),
    ],
)
def test_broken_files_raise_one_line_naming_the_file(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "dir with space" / "bäd.jpg"
    path.parent.mkdir()
    path.write_bytes(content)
    with pytest.raises(ImageDecodeError, match=reason) as info:
        load_image(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg


def test_unreadable_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "x.jpg").mkdir()
    with pytest.raises(ImageDecodeError, match="folder"):
        load_image(tmp_path / "x.jpg")
    locked = write_image(tmp_path / "locked.jpg")

    def deny(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", deny)
    with pytest.raises(ImageDecodeError, match=r"locked\.jpg: permission denied"):
        load_image(locked)


def test_decode_bytes_directly() -> None:
    assert decode_image(jpeg_bytes((10, 6))).size == (10, 6)


@pytest.mark.parametrize("planar", ["separate", "contig"])
def test_pixel_limit_counts_every_band_of_a_tiff(tmp_path: Path, planar: str) -> None:
    # 12 bands x 60 x 60 = 43200 samples: over a limit of 20000 although 60 x 60 = 3600 is not
    arr = np.zeros((12, 60, 60), np.uint16) if planar == "separate" else np.zeros((60, 60, 12))
    tifffile.imwrite(tmp_path / "bands.tif", arr.astype(np.uint16), planarconfig=planar)
    with pytest.raises(ImageDecodeError, match=r"bands\.tif.*43200 samples exceeds the limit"):
        load_image(tmp_path / "bands.tif", max_pixels=20_000)
    assert load_image(tmp_path / "bands.tif", max_pixels=43_200).size == (60, 60)
    # an 8-bit RGB TIFF that Pillow reads itself: 3 samples per pixel
    write_image(tmp_path / "rgb.tif", size=(50, 40))
    with pytest.raises(ImageDecodeError, match=r"6000 samples exceeds"):
        load_image(tmp_path / "rgb.tif", max_pixels=5000)
    assert load_image(tmp_path / "rgb.tif", max_pixels=6000).size == (50, 40)


class _WatchedModule(type(Image)):  # type: ignore[misc]
    writes: ClassVar[list[object]] = []

    def __setattr__(self, name: str, value: object) -> None:
        if name == "MAX_IMAGE_PIXELS":
            _WatchedModule.writes.append(value)
        super().__setattr__(name, value)


def test_decoding_never_changes_pillows_global_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pillow's process-wide limit is someone else's setting (and shared by every thread): the
    # per-call max_pixels applies without writing it, even when it is far below ours (opening a
    # 100 x 100 PNG would exceed twice Pillow's 4000 here)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000)
    write_image(tmp_path / "a.png", size=(100, 100))
    write_image(tmp_path / "a.tif", size=(60, 60))
    (tmp_path / "bomb.png").write_bytes(png_header_bomb(30000, 30000))
    _WatchedModule.writes.clear()
    original = Image.__class__
    Image.__class__ = _WatchedModule
    try:
        assert load_image(tmp_path / "a.png").size == (100, 100)
        assert load_image(tmp_path / "a.tif").size == (60, 60)
        assert decode_image(jpeg_bytes((64, 48))).size == (64, 48)
        with pytest.raises(ImageDecodeError, match="exceeds the limit"):
            load_image(tmp_path / "bomb.png")
    finally:
        Image.__class__ = original
    assert _WatchedModule.writes == []
    assert Image.MAX_IMAGE_PIXELS == 4000
