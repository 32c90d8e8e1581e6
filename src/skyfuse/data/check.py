"""`skyfuse datasets check`: decode every image of a scene folder and say whether it is usable.

Why decode everything up front: a corrupt file found in the middle of a training epoch costs a run;
found here it costs one line of the report. The check also hashes every file (exact duplicates leak
between train and test), collects image sizes, and compares class names and counts with the registry
entry when the folder is a known dataset.

Decoding runs in a pool. Threads are the default because Pillow releases the GIL while it decodes, so
they scale without the start-up and pickling cost of processes (see BENCHMARKS.md for the measurement);
``executor="process"`` is there for decoders that hold the GIL.
"""

from __future__ import annotations

import os
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from skyfuse.data.catalog import DatasetInfo, get_dataset, match_dataset
from skyfuse.data.folder import SceneFolder
from skyfuse.data.images import DEFAULT_MAX_PIXELS, decode_image, sha256_bytes
from skyfuse.data.synthetic import is_synthetic
from skyfuse.errors import ImageDecodeError

EXECUTORS = ("thread", "process")


@dataclass(frozen=True)
class ImageResult:
    """What decoding one file found (picklable, so process pools can return it)."""

    rel: str
    ok: bool
    reason: str = ""
    width: int = 0
    height: int = 0
    sha256: str = ""
    format: str = ""


def inspect_image(path: str, rel: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageResult:
    """Read, hash and fully decode one file; never raises for a bad file."""
    try:
        data = Path(path).read_bytes()
    except PermissionError:
        return ImageResult(rel, False, "permission denied; fix the file's permissions")
    except IsADirectoryError:
        return ImageResult(rel, False, "is a folder, not an image; rename or remove it")
    except OSError as exc:
        return ImageResult(rel, False, f"cannot read ({exc.strerror or exc})")
    digest = sha256_bytes(data)
    try:
        img = decode_image(data, path, max_pixels=max_pixels)
        img.load()
    except ImageDecodeError as exc:
        return ImageResult(rel, False, exc.reason, sha256=digest)
    suffix = Path(path).suffix.lower().lstrip(".")
    return ImageResult(rel, True, "", img.width, img.height, digest, suffix)


def _inspect_star(args: tuple[str, str, int]) -> ImageResult:
    return inspect_image(*args)


@dataclass
class DatasetComparison:
    """How a folder compares with its registry entry."""

    dataset: str
    title: str
    exact: bool
    missing_classes: list[str]
    count_mismatches: dict[str, dict[str, int]]  # folder class -> {"found", "expected"}
    expected_total: int

    @property
    def complete(self) -> bool:
        return self.exact and not self.missing_classes and not self.count_mismatches


@dataclass
class CheckReport:
    """Result of `check_folder`; `to_dict` is the ``--json`` contract (classes, total, corrupt, ...)."""

    root: str
    image_root: str
    layout: str
    synthetic: bool
    classes: dict[str, int]
    total: int
    scanned: int
    corrupt: list[str]
    errors: dict[str, str]
    duplicates: list[list[str]]
    sizes: dict[str, Any]
    formats: dict[str, int]
    skipped: dict[str, list[str]]
    captions: int | None
    dataset: DatasetComparison | None
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    workers: int = 1
    executor: str = "thread"

    @property
    def usable(self) -> bool:
        """Usable for classification: at least two classes with at least one decodable image."""
        return sum(1 for n in self.classes.values() if n > 0) >= 2

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["usable"] = self.usable
        if self.dataset is not None:
            out["dataset"]["complete"] = self.dataset.complete
        return out


def _size_stats(results: Iterable[ImageResult]) -> dict[str, Any]:
    ok = [r for r in results if r.ok]
    if not ok:
        return {}
    widths = [r.width for r in ok]
    heights = [r.height for r in ok]
    common = Counter(f"{r.width}x{r.height}" for r in ok).most_common()
    return {
        "min": [min(widths), min(heights)],
        "max": [max(widths), max(heights)],
        "median": [statistics.median(widths), statistics.median(heights)],
        "most_common": common[:5],
        "distinct": len(common),
    }


def _compare(info: DatasetInfo, counts: dict[str, int]) -> DatasetComparison:
    matched = {name: info.find_class(name) for name in counts}
    present = {c.name for c in matched.values() if c is not None}
    mismatches: dict[str, dict[str, int]] = {}
    for name, cls in matched.items():
        if cls is not None and cls.count is not None and counts[name] != cls.count:
            mismatches[name] = {"found": counts[name], "expected": cls.count}
    return DatasetComparison(
        dataset=info.name,
        title=info.title,
        exact=len(present) == len(info.classes),
        missing_classes=[c.name for c in info.classes if c.name not in present],
        count_mismatches=mismatches,
        expected_total=info.total,
    )


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _make_pool(executor: str, workers: int) -> Executor:
    if executor == "process":
        return ProcessPoolExecutor(max_workers=workers)
    return ThreadPoolExecutor(max_workers=workers)


def check_folder(
    root: str | Path,
    *,
    name: str | None = None,
    workers: int | None = None,
    executor: str = "thread",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    on_start: Callable[[int], None] | None = None,
    on_result: Callable[[ImageResult], None] | None = None,
) -> CheckReport:
    """Decode every image of the folder at ``root`` and report counts, failures, duplicates, sizes.

    ``name`` compares with that registry dataset; otherwise one is matched by class names.
    ``on_start(n)`` and ``on_result(result)`` drive a progress bar. Folder-level problems (missing
    folder, no class folders) raise `BadInputError`; per-file problems are reported, never raised.
    """
    import time

    if executor not in EXECUTORS:
        from skyfuse.errors import ConfigError

        raise ConfigError(f"unknown executor {executor!r}; use thread or process")
    start = time.perf_counter()
    folder = SceneFolder(root)
    workers = max(1, workers or default_workers())
    jobs = [(str(s.path), s.rel, max_pixels) for s in folder.samples]
    if on_start is not None:
        on_start(len(jobs))
    results: list[ImageResult] = []
    if workers == 1 or len(jobs) < 2:
        for job in jobs:
            results.append(_inspect_star(job))
            if on_result is not None:
                on_result(results[-1])
    else:
        chunk = max(1, min(32, len(jobs) // (workers * 8))) if executor == "process" else 1
        with _make_pool(executor, workers) as pool:
            for res in pool.map(_inspect_star, jobs, chunksize=chunk):
                results.append(res)
                if on_result is not None:
                    on_result(res)

    ok_by_class: Counter[str] = Counter()
    for res in results:
        if res.ok:
            ok_by_class[res.rel.split("/", 1)[0]] += 1
    classes = {c: ok_by_class.get(c, 0) for c in folder.classes}
    for c in folder.report.empty_classes + folder.report.nested_only_classes:
        classes.setdefault(c, 0)
    classes = dict(sorted(classes.items()))

    failed = [r for r in results if not r.ok]
    unreadable = list(folder.report.unreadable)
    errors = {r.rel: r.reason for r in failed}
    for rel in unreadable:
        errors[rel] = "not a readable file (a folder or a broken link named like an image)"
    corrupt = sorted(errors)

    by_hash: dict[str, list[str]] = defaultdict(list)
    for r in results:
        if r.ok:
            by_hash[r.sha256].append(r.rel)
    duplicates = sorted(sorted(g) for g in by_hash.values() if len(g) > 1)

    info: DatasetInfo | None
    info = get_dataset(name) if name else match_dataset([c for c, n in classes.items() if n > 0])
    comparison = _compare(info, classes) if info is not None else None

    image_root = Path(folder.image_root)
    warnings = folder.report.warnings(image_root)
    for rel in corrupt:
        warnings.append(f"{image_root / rel}: {errors[rel]}")
    cross = [g for g in duplicates if len({rel.split("/", 1)[0] for rel in g}) > 1]
    if duplicates:
        warnings.append(
            f"{len(duplicates)} group(s) of byte-identical images ({len(cross)} across classes),"
            f" e.g. {', '.join(duplicates[0][:2])}; `skyfuse split` keeps each group in one part,"
            " but remove unintended copies (across classes they are label noise)"
        )
    captions = None
    if folder.layout == "paper":
        captions = sum(1 for s in folder.samples if s.text_path is not None)
        if captions < len(folder):
            warnings.append(
                f"{len(folder) - captions} image(s) have no caption in {folder.text_root}"
                " (expected text/<Class>/<stem>.txt)"
            )
    report = folder.report
    return CheckReport(
        root=str(folder.root),
        image_root=str(image_root),
        layout=folder.layout,
        synthetic=is_synthetic(folder.root),
        classes=classes,
        total=sum(classes.values()),
        scanned=len(results) + len(unreadable),
        corrupt=corrupt,
        errors=errors,
        duplicates=duplicates,
        sizes=_size_stats(results),
        formats=dict(Counter(r.format for r in results if r.ok)),
        skipped={
            "hidden": report.hidden,
            "non_images": report.non_images,
            "loose_files": report.loose_files,
            "metadata": report.metadata,
            "empty_classes": report.empty_classes,
            "nested_only_classes": report.nested_only_classes,
        },
        captions=captions,
        dataset=comparison,
        warnings=warnings,
        seconds=round(time.perf_counter() - start, 3),
        workers=workers,
        executor=executor,
    )


__all__ = [
    "EXECUTORS",
    "CheckReport",
    "DatasetComparison",
    "ImageResult",
    "check_folder",
    "default_workers",
    "inspect_image",
]
