"""Download: resumable, checksum-verified, atomic, and never on by default; typed not-found errors."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import httpx
import pytest

from skyfuse.data import download as dl
from skyfuse.data.catalog import DatasetInfo, _cls
from skyfuse.data.synthetic import make_synthetic_dataset
from skyfuse.errors import ChecksumError, DatasetNotFoundError

PAYLOAD = bytes(range(256)) * 400


def _server(payload: bytes, calls: list[dict[str, str]]) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(dict(request.headers))
        rng = request.headers.get("range")
        if rng:
            start = int(rng.split("=")[1].rstrip("-"))
            if start >= len(payload):
                return httpx.Response(416)
            return httpx.Response(206, content=payload[start:])
        return httpx.Response(200, content=payload)

    return httpx.Client(transport=httpx.MockTransport(handler))


def test_downloads_disabled_in_tests(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="SKYFUSE_NO_DOWNLOAD"):
        dl.download_file("https://example.org/x.zip", tmp_path / "x.zip")


def test_download_resumes_verifies_and_renames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKYFUSE_NO_DOWNLOAD", "0")
    dest = tmp_path / "a.bin"
    (tmp_path / "a.bin.part").write_bytes(PAYLOAD[:1000])
    calls: list[dict[str, str]] = []
    seen: list[int] = []
    out = dl.download_file(
        "https://example.org/a.bin",
        dest,
        sha256=hashlib.sha256(PAYLOAD).hexdigest(),
        client=_server(PAYLOAD, calls),
        on_progress=lambda done, total: seen.append(done),
    )
    assert out == dest and dest.read_bytes() == PAYLOAD
    assert calls[0]["range"] == "bytes=1000-"
    assert seen[-1] == len(PAYLOAD)
    assert not (tmp_path / "a.bin.part").exists()


def test_bad_checksum_leaves_no_final_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYFUSE_NO_DOWNLOAD", "0")
    dest = tmp_path / "b.bin"
    with pytest.raises(ChecksumError, match="md5"):
        dl.download_file("https://x/b", dest, md5="0" * 32, client=_server(PAYLOAD, []))
    assert not dest.exists() and not (tmp_path / "b.bin.part").exists()


def test_http_error_is_typed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYFUSE_NO_DOWNLOAD", "0")
    client = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(403)))
    with pytest.raises(DatasetNotFoundError, match=r"HTTP 403.*by hand"):
        dl.download_file("https://x/c", tmp_path / "c", client=client)


def test_fetch_missing_dataset_gives_manual_instructions(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"AID.*no public direct download.*captain-whu"):
        dl.fetch_dataset("aid", tmp_path)
    with pytest.raises(DatasetNotFoundError, match="SKYFUSE_NO_DOWNLOAD"):
        dl.fetch_dataset("eurosat", tmp_path, download=True)


def _tiny_info(tmp_path: Path, per_class: int) -> tuple[DatasetInfo, bytes]:
    src = make_synthetic_dataset(
        tmp_path / "src", per_class=per_class, size=16, classes=["beach", "forest"]
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(src.rglob("*.jpg")):
            zf.write(p, f"Tiny/images/{p.parent.name}/{p.name}")
    data = buf.getvalue()
    info = DatasetInfo(
        name="tiny", title="Tiny", classes=(_cls("beach", 3), _cls("forest", 3)), total=6,
        image_size=(16, 16), protocols=(), citation="-", licence="-", homepage="https://x",
        url="https://x/tiny.zip", archive="tiny.zip", sha256=hashlib.sha256(data).hexdigest(),
        image_subdir="Tiny/images",
    )  # fmt: skip
    return info, data


def test_fetch_downloads_extracts_and_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKYFUSE_NO_DOWNLOAD", "0")
    info, data = _tiny_info(tmp_path, 3)
    monkeypatch.setattr(dl, "get_dataset", lambda name: info)
    images = dl.fetch_dataset("tiny", tmp_path / "root", download=True, client=_server(data, []))
    assert images == tmp_path / "root" / "Tiny" / "images"
    assert dl.fetch_dataset("tiny", tmp_path / "root") == images  # second call: no download


def test_incomplete_dataset_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info, _ = _tiny_info(tmp_path, 2)
    monkeypatch.setattr(dl, "get_dataset", lambda name: info)
    make_synthetic_dataset(tmp_path / "have", per_class=2, size=16, classes=["beach", "forest"])
    with pytest.raises(DatasetNotFoundError, match="4 of 6 images"):
        dl.fetch_dataset("tiny", tmp_path / "have")
