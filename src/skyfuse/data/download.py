"""Optional, checksum-verified dataset download, and the typed error that says how to get one by hand.

Why a module of its own: peers' users mostly complain about datasets that fail to download (403s,
Google Drive quotas, half-written archives). Here a download resumes from a ``.part`` file with an HTTP
Range request, is verified against the registry checksum before it is renamed into place (so a final
file name always means a complete, verified archive), and any failure names the manual route.
Downloads are off unless asked for, and ``SKYFUSE_NO_DOWNLOAD=1`` forbids them (the tests set it).
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx

from skyfuse.data.catalog import DatasetInfo, get_dataset
from skyfuse.data.folder import SceneFolder
from skyfuse.errors import BadInputError, ChecksumError, DatasetNotFoundError

ProgressHook = Callable[[int, int | None], None]  # (bytes done, total or None)


def downloads_allowed() -> bool:
    return os.environ.get("SKYFUSE_NO_DOWNLOAD", "") not in {"1", "true", "yes"}


def _hash_file(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def verify_checksum(path: Path, *, sha256: str | None = None, md5: str | None = None) -> None:
    """Raise `ChecksumError` if ``path`` does not match the given hash (sha256 preferred)."""
    for algo, want in (("sha256", sha256), ("md5", md5)):
        if want:
            got = _hash_file(path, algo)
            if got.lower() != want.lower():
                raise ChecksumError(
                    f"{path}: {algo} is {got}, expected {want}; the file is corrupt or a different"
                    " release: delete it and download again"
                )
            return


def download_file(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    client: httpx.Client | None = None,
    on_progress: ProgressHook | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest``: resumable (``dest.part`` + Range), verified, renamed atomically."""
    dest = Path(dest)
    if dest.is_file():
        verify_checksum(dest, sha256=sha256, md5=md5)
        return dest
    if not downloads_allowed():
        raise DatasetNotFoundError(
            f"{dest}: missing and downloads are disabled (SKYFUSE_NO_DOWNLOAD=1);"
            f" fetch {url} by hand and save it there"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    own = client is None
    http = client or httpx.Client(follow_redirects=True, timeout=timeout)
    try:
        done = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={done}-"} if done else {}
        with http.stream("GET", url, headers=headers) as resp:
            if resp.status_code == 416:  # already complete
                pass
            elif resp.status_code not in (200, 206):
                raise DatasetNotFoundError(
                    f"{url}: HTTP {resp.status_code}; download it by hand to {dest}"
                )
            else:
                append = resp.status_code == 206 and done > 0
                if not append:
                    done = 0
                length = resp.headers.get("content-length")
                total = done + int(length) if length is not None else None
                with open(part, "ab" if append else "wb") as f:
                    for block in resp.iter_bytes(1 << 20):
                        f.write(block)
                        done += len(block)
                        if on_progress is not None:
                            on_progress(done, total)
                    f.flush()
                    os.fsync(f.fileno())
    except httpx.HTTPError as exc:
        raise DatasetNotFoundError(
            f"{url}: download failed ({type(exc).__name__}); run again to resume from {part},"
            f" or download it by hand to {dest}"
        ) from None
    finally:
        if own:
            http.close()
    try:
        verify_checksum(part, sha256=sha256, md5=md5)
    except ChecksumError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    return dest


def _safe_extract(archive: Path, target: Path) -> None:
    """Unzip refusing members that would land outside ``target`` (zip-slip)."""
    root = target.resolve()
    with zipfile.ZipFile(archive) as zf:
        for member in zf.infolist():
            out = (target / member.filename).resolve()
            if out != root and root not in out.parents:
                raise BadInputError(f"{archive}: member {member.filename!r} escapes the folder")
        zf.extractall(target)


def locate_images(info: DatasetInfo, root: Path) -> Path | None:
    """The folder under ``root`` that holds the dataset's class sub-folders, if any."""
    for cand in (root / info.image_subdir, root, root / info.name):
        if cand.is_dir() and any(info.find_class(p.name) for p in cand.iterdir() if p.is_dir()):
            return cand
    return None


def check_complete(info: DatasetInfo, images: Path) -> SceneFolder:
    """Open ``images`` and raise `DatasetNotFoundError` when classes or images are missing."""
    folder = SceneFolder(images)
    found = {c.name for c in (info.find_class(n) for n in folder.classes) if c}
    missing = [c.name for c in info.classes if c.name not in found]
    if missing:
        raise DatasetNotFoundError(
            f"{images}: incomplete {info.title}: {len(missing)} class folder(s) missing"
            f" (e.g. {missing[0]}); {info.manual_instructions(str(images))}"
        )
    if len(folder) < info.total:
        raise DatasetNotFoundError(
            f"{images}: incomplete {info.title}: {len(folder)} of {info.total} images;"
            f" {info.manual_instructions(str(images))}"
        )
    return folder


def fetch_dataset(
    name: str,
    root: str | Path,
    *,
    download: bool = False,
    client: httpx.Client | None = None,
    on_progress: ProgressHook | None = None,
) -> Path:
    """Return the image folder of dataset ``name`` under ``root``, downloading it when asked and possible.

    Raises `DatasetNotFoundError` with manual instructions when it is absent or incomplete and cannot
    be downloaded (no public URL, ``download=False`` or ``SKYFUSE_NO_DOWNLOAD=1``).
    """
    info = get_dataset(name)
    root = Path(root).expanduser()
    images = locate_images(info, root)
    if images is not None:
        check_complete(info, images)
        return images
    if not download or info.url is None or not downloads_allowed():
        why = (
            "no public direct download"
            if info.url is None
            else "downloads are disabled (SKYFUSE_NO_DOWNLOAD=1)"
            if not downloads_allowed()
            else "pass download=True (CLI: --download) to fetch it"
        )
        raise DatasetNotFoundError(
            f"{root}: {info.title} not found ({why}); {info.manual_instructions(str(root))}"
        )
    archive = download_file(
        info.url,
        root / (info.archive or Path(info.url).name),
        sha256=info.sha256,
        md5=info.md5,
        client=client,
        on_progress=on_progress,
    )
    _safe_extract(archive, root)
    images = locate_images(info, root)
    if images is None:
        raise DatasetNotFoundError(
            f"{archive}: unpacked, but no {info.title} class folders found under {root};"
            f" {info.manual_instructions(str(root))}"
        )
    check_complete(info, images)
    return images


__all__ = [
    "check_complete",
    "download_file",
    "downloads_allowed",
    "fetch_dataset",
    "locate_images",
    "verify_checksum",
]
