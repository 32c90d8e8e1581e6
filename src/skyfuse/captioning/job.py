"""Caption jobs as data: what `skyfuse caption` and `skyfuse captions audit|status` decide, testable
without the command line.

`CaptionJob` picks the backend (a VLM when one is configured, the offline attribute captioner
otherwise) and passes each backend only the options it takes; `run_caption_job` runs it.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from skyfuse.captioning.audit import AuditReport
    from skyfuse.captioning.base import Captioner
    from skyfuse.captioning.runner import CaptionRunSummary

#: backend -> the `CaptionJob` options it takes (under the backend's keyword names)
BACKEND_OPTIONS: dict[str, tuple[str, ...]] = {
    "openai": (
        "model",
        "base_url",
        "api_key_env",
        "max_tokens",
        "temperature",
        "seed",
        "read_timeout",
        "max_retries",
        "max_side",
    ),
    "transformers": (
        "model",
        "device",
        "dtype",
        "batch_size",
        "max_tokens",
        "temperature",
        "seed",
        "max_side",
    ),
    "files": ("source",),
    "attributes": (),
}


def pick_backend(
    backend: str | None, model: str | None, base_url: str | None, source: Path | None
) -> str:
    """The default backend: a VLM when one is configured, the attribute captioner otherwise."""
    if backend:
        return backend
    if source is not None:
        return "files"
    if model and Path(model).expanduser().is_dir():
        return "transformers"
    if model or base_url or os.environ.get("OPENAI_BASE_URL"):
        return "openai"
    return "attributes"


def backend_options(backend: str, **o: Any) -> dict[str, Any]:
    """Options -> keyword arguments of the chosen backend (unset ones keep its defaults)."""
    keep = BACKEND_OPTIONS.get(backend.lower(), tuple(o))
    return {k: v for k, v in o.items() if k in keep and v is not None}


@dataclass(frozen=True)
class CaptionJob:
    """One `caption_folder` run: the folder, the store, the backend and its settings.

    Unset (None) backend settings keep the backend's own defaults.
    """

    path: Path
    out: Path = Path("captions.jsonl")
    backend: str | None = None
    model: str | None = None
    base_url: str | None = None
    prompt: str = "ground"
    concurrency: int = 8
    shard: str | None = None
    limit: int | None = None
    source: Path | None = None
    api_key_env: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    seed: int | None = None
    max_side: int | None = None
    timeout: float | None = None
    retries: int | None = None
    device: str | None = None
    dtype: str | None = None
    batch_size: int | None = None

    @property
    def backend_name(self) -> str:
        return pick_backend(self.backend, self.model, self.base_url, self.source)

    @property
    def falls_back(self) -> bool:
        """True when nothing chose a backend and no VLM is configured: captions are pixel statistics."""
        return self.backend is None and self.backend_name == "attributes"

    def captioner_options(self) -> dict[str, Any]:
        return backend_options(
            self.backend_name,
            model=self.model,
            base_url=self.base_url,
            api_key_env=self.api_key_env,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            seed=self.seed,
            read_timeout=self.timeout,
            max_retries=self.retries,
            max_side=self.max_side,
            device=self.device,
            dtype=self.dtype,
            batch_size=self.batch_size,
            source=self.source,
        )

    def build_captioner(self) -> Captioner:
        from skyfuse.captioning.base import create_captioner

        return create_captioner(self.backend_name, **self.captioner_options())


def run_caption_job(
    job: CaptionJob, captioner: Captioner | None = None, *, progress: Any = True
) -> CaptionRunSummary:
    """Caption `job.path` into `job.out` (building the captioner unless one is given)."""
    from skyfuse.captioning.runner import caption_folder, parse_shard

    return caption_folder(
        job.path,
        captioner if captioner is not None else job.build_captioner(),
        job.out,
        prompt=job.prompt,
        concurrency=job.concurrency,
        shard=parse_shard(job.shard) if job.shard else None,
        limit=job.limit,
        progress=progress,
    )


@dataclass
class AuditRun:
    """A leakage audit of one caption source, with what it was checked against."""

    captions: dict[str, str]
    class_names: list[str]
    registry: str | None
    folder_classes: list[str]
    report: AuditReport

    @property
    def widened(self) -> bool:
        """True when other-class mentions were checked against the registry's classes too."""
        return self.registry is not None and len(self.class_names) > len(self.folder_classes)


def audit_source(source: Path, dataset: Path | None = None) -> AuditRun:
    """Load captions (matched to `dataset`'s images when given) and audit their class-name leakage.

    Without a dataset the class of an image is its first path part.
    """
    from skyfuse.captioning.audit import audit_captions, with_registry_classes
    from skyfuse.captioning.load import load_captions
    from skyfuse.errors import BadInputError

    caps = load_captions(source, dataset)
    if not caps:
        raise BadInputError(f"{source}: no captions matched; check --dataset and the file names")
    class_of = None
    folder_classes = sorted({rel.split("/")[0] for rel in caps})
    if dataset is not None:
        from skyfuse.data.folder import SceneFolder

        folder = SceneFolder(dataset)
        class_of = {s.rel: s.class_name for s in folder.samples}
        folder_classes = folder.classes
    class_names, registry = with_registry_classes(folder_classes)
    report = audit_captions(caps, class_of, class_names)
    return AuditRun(dict(caps), class_names, registry, list(folder_classes), report)


def write_masked(
    captions: dict[str, str], class_names: list[str], path: Path, token: str = "[MASK]"
) -> int:
    """Write a JSONL copy with class words masked and verdict sentences removed; returns the count."""
    from skyfuse.captioning.audit import mask_captions

    masked = mask_captions(captions, class_names, token=token)
    with open(path, "w", encoding="utf-8") as f:
        for rel, text in masked.items():
            f.write(json.dumps({"path": rel, "caption": text, "masked": True}) + "\n")
    return len(masked)


@dataclass
class StoreStatus:
    """What a caption store holds: captions per (backend, model, prompt) and failures to retry."""

    per_source: Counter[tuple[Any, Any, Any]]
    captioned: set[str]
    failed: dict[str, str]

    def missing_in(self, dataset: Path) -> tuple[int, int]:
        """(images of the scene folder `dataset` without a caption, its images)."""
        from skyfuse.data.folder import SceneFolder

        rels = [s.rel for s in SceneFolder(dataset).samples]
        return sum(1 for r in rels if r not in self.captioned), len(rels)


def store_status(store: Path) -> StoreStatus:
    """Read a store written by `caption_folder` (refusing other caption files)."""
    from skyfuse.captioning.store import is_store_record, latest_captions, read_records
    from skyfuse.errors import BadInputError

    recs = read_records(store)
    if not all(is_store_record(r) for r in recs):
        raise BadInputError(
            f"{store}: not a caption store (records need path, sha256, backend); give the JSONL"
            " written by `skyfuse caption`"
        )
    ok = Counter(
        (r["backend"], r["model"], r.get("prompt_id"))
        for r in recs
        if r.get("status", "ok") == "ok" and r.get("caption") is not None
    )
    done = set(latest_captions(recs))
    failed = {
        str(r["path"]): str(r.get("error", "?"))
        for r in recs
        if r.get("status") == "error" and r["path"] not in done
    }
    return StoreStatus(ok, done, failed)


__all__ = [
    "AuditRun",
    "CaptionJob",
    "StoreStatus",
    "audit_source",
    "backend_options",
    "pick_backend",
    "run_caption_job",
    "store_status",
    "write_masked",
]
