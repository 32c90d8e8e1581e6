"""Folder scanning and `check_folder`: bad input gets one line naming the file, counts stay right."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from skyfuse.data import SceneFolder
from skyfuse.data import check as check_mod
from skyfuse.data.check import check_folder, inspect_image
from skyfuse.data.synthetic import make_synthetic_dataset
from skyfuse.errors import BadInputError, ConfigError
from tests.data.helpers import jpeg_bytes, make_folder, png_header_bomb, write_image


@pytest.fixture
def messy(tmp_path: Path) -> Path:
    """Two good classes with every kind of bad file mixed in."""
    root = make_folder(tmp_path / "my data", {"Dense Résidential": 4, "forest": 3})
    cls = root / "forest"
    (cls / "truncated.jpg").write_bytes(jpeg_bytes()[:200])
    (cls / "zero.jpg").write_bytes(b"")
    (cls / "notes.jpg").write_text("this is text, not a JPEG\n")
    (cls / "folder.jpg").mkdir()  # unreadable: a folder named like an image
    (cls / "bomb.png").write_bytes(png_header_bomb(40000, 40000))
    (cls / "readme.txt").write_text("ignored")
    (cls / ".DS_Store").write_bytes(b"x")
    (root / "empty class").mkdir()
    (root / "nested" / "deeper").mkdir(parents=True)
    write_image(root / "nested" / "deeper" / "x.jpg")
    (root / "SOURCE.md").write_text("metadata")
    write_image(root / "loose.jpg")
    shutil.copy(root / "forest" / "forest_0.jpg", root / "Dense Résidential" / "copy of forest.jpg")
    return root


def test_scan_counts_and_warnings(messy: Path) -> None:
    folder = SceneFolder(messy)
    assert folder.classes == ["Dense Résidential", "forest"]
    # the scan lists by extension only; decoding is the check's job
    assert folder.counts() == {"Dense Résidential": 5, "forest": 3 + 4}
    r = folder.report
    assert r.unreadable == ["forest/folder.jpg"]
    assert r.empty_classes == ["empty class"] and r.nested_only_classes == ["nested"]
    assert r.non_images == ["forest/readme.txt"] and r.hidden == ["forest/.DS_Store"]
    assert r.metadata == ["SOURCE.md"] and r.loose_files == ["loose.jpg"]
    text = "\n".join(r.warnings(messy))
    assert "empty class: class folder is empty" in text
    assert "holds only sub-folders" in text


def test_check_reports_each_bad_file_once(messy: Path) -> None:
    report = check_folder(messy, workers=2)
    assert report.classes == {"Dense Résidential": 5, "empty class": 0, "forest": 3, "nested": 0}
    assert report.total == 8
    assert report.corrupt == sorted(
        f"forest/{n}" for n in ("truncated.jpg", "zero.jpg", "notes.jpg", "folder.jpg", "bomb.png")
    )
    reasons = report.errors
    assert (
        "truncated" in reasons["forest/truncated.jpg"]
        or "decode" in reasons["forest/truncated.jpg"]
    )
    assert "empty" in reasons["forest/zero.jpg"]
    assert "not a readable image" in reasons["forest/notes.jpg"]
    assert "decompression bomb" in reasons["forest/bomb.png"]
    assert report.scanned == 13
    assert report.duplicates == [["Dense Résidential/copy of forest.jpg", "forest/forest_0.jpg"]]
    assert report.usable and report.dataset is None
    for w in report.warnings:
        assert "\n" not in w
    assert any(str(messy / "forest" / "zero.jpg") in w for w in report.warnings)
    assert any("across classes" in w for w in report.warnings)
    blob = json.dumps(report.to_dict(), ensure_ascii=False)
    assert json.loads(blob)["corrupt"] == report.corrupt


def test_thread_and_process_pools_agree(tmp_path: Path) -> None:
    root = make_synthetic_dataset(tmp_path, per_class=4, size=32, classes=["beach", "water"])
    (root / "beach" / "bad.jpg").write_bytes(b"nope")
    a = check_folder(root, workers=2, executor="thread")
    b = check_folder(root, workers=2, executor="process")
    c = check_folder(root, workers=1)
    assert a.classes == b.classes == c.classes == {"beach": 4, "water": 4}
    assert a.corrupt == b.corrupt == c.corrupt == ["beach/bad.jpg"]
    assert a.sizes == b.sizes
    assert a.synthetic
    with pytest.raises(ConfigError, match="executor"):
        check_folder(root, executor="fibre")


def test_permission_denied_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # tests run as root, where chmod 000 does not stop reads: simulate the OS refusing
    path = write_image(tmp_path / "a" / "locked.jpg")
    real = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self.name == "locked.jpg":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    res = inspect_image(str(path), "a/locked.jpg")
    assert not res.ok and "permission denied" in res.reason
    write_image(tmp_path / "b" / "fine.jpg")
    write_image(tmp_path / "a" / "ok.jpg")
    report = check_folder(tmp_path, workers=1)
    assert report.classes == {"a": 1, "b": 1} and report.corrupt == ["a/locked.jpg"]


def test_folder_level_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="does not exist"):
        check_folder(tmp_path / "missing")
    (tmp_path / "file.jpg").write_bytes(b"x")
    with pytest.raises(BadInputError, match="is a file"):
        SceneFolder(tmp_path / "file.jpg")
    with pytest.raises(BadInputError, match="no class sub-folders"):
        SceneFolder(tmp_path)
    (tmp_path / "a" / "b").mkdir(parents=True)
    with pytest.raises(BadInputError, match="no images found"):
        SceneFolder(tmp_path)


def test_not_usable_with_one_readable_class(tmp_path: Path) -> None:
    make_folder(tmp_path, {"a": 2})
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.jpg").write_bytes(b"")
    report = check_folder(tmp_path, workers=1)
    assert not report.usable and report.classes == {"a": 2, "b": 0}


def test_registry_comparison(tmp_path: Path) -> None:
    root = make_folder(tmp_path, {"Airport": 2, "Beach": 1, "BareLand": 1})
    report = check_folder(root, workers=1)
    assert report.dataset is not None and report.dataset.dataset == "aid"
    assert not report.dataset.exact and not report.dataset.complete
    assert report.dataset.count_mismatches["Airport"] == {"found": 2, "expected": 360}
    named = check_folder(root, name="whu-rs19", workers=1)
    assert named.dataset is not None and named.dataset.dataset == "whu-rs19"


def test_paper_layout_counts_captions(tmp_path: Path) -> None:
    for i in range(3):
        write_image(tmp_path / "image" / "Beach" / f"b{i}.jpg", seed=i)
        write_image(tmp_path / "image" / "Port" / f"p{i}.jpg", seed=10 + i)
    for i in range(3):
        (tmp_path / "text" / "Beach").mkdir(parents=True, exist_ok=True)
        (tmp_path / "text" / "Beach" / f"b{i}.txt").write_text(f"sand {i}\n")
    folder = SceneFolder(tmp_path)
    assert folder.layout == "paper" and len(folder) == 6
    assert folder.texts() == {f"Beach/b{i}.jpg": f"sand {i}" for i in range(3)}
    report = check_folder(tmp_path, workers=1)
    assert report.captions == 3 and report.layout == "paper"
    assert any("have no caption" in w for w in report.warnings)


def test_default_workers_bounded() -> None:
    assert 1 <= check_mod.default_workers() <= 8
