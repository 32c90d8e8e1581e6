"""Where captions came from: recorded with every trained bundle, checked at prediction time.

Why: a model is only valid with captions of the kind it was trained on. A model trained on human
RSICD captions and then fed offline attribute captions answers confidently and wrongly, so the bundle
records its training captions' source (backend, model, prompt id and text, or the human caption file)
and prediction compares every caption it uses against that record (`same_kind`).

A source is one of four kinds: ``captioner`` (a backend that can caption new images again: the
attribute captioner or a VLM with its prompt), ``files`` (imported captions, e.g. human caption sets:
nothing can make more of them), ``mixed`` (a store with several captioners in it) and ``unknown``
(bundles written before sources were recorded).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

KINDS = ("captioner", "files", "mixed", "unknown")
#: Backends that caption new images (the `files` backend only looks captions up).
GENERATING_BACKENDS = ("attributes", "openai", "transformers")


@dataclass(frozen=True)
class CaptionSource:
    """Provenance of a set of captions (see the module docstring for the kinds)."""

    kind: str = "unknown"
    backend: str | None = None
    model: str | None = None
    prompt_id: str | None = None
    prompt_text: str | None = None
    prompt_hash: str | None = None
    file: str | None = None
    format: str | None = None
    is_vlm: bool | None = None
    attributes_version: str | None = None
    parts: list[str] = field(default_factory=list)

    # -- identity ----------------------------------------------------------------------------------
    @property
    def id(self) -> str:
        """Short id used in prediction records: ``attributes:attributes-v1``,
        ``openai:qwen2-vl:ground``, ``files:rsicd.json``, ``mixed`` or ``unknown``."""
        if self.kind == "captioner":
            base = f"{self.backend}:{self.model}"
            return (
                base
                if self.backend == "attributes" or not self.prompt_id
                else (f"{base}:{self.prompt_id}")
            )
        if self.kind == "files":
            return f"files:{Path(self.file).name}" if self.file else "files"
        return self.kind

    def describe(self) -> str:
        """One human phrase, e.g. 'human or imported captions (file rsicd.json)'."""
        if self.kind == "captioner":
            if self.backend == "attributes":
                return f"the offline attribute captioner ({self.model})"
            prompt = f", prompt {self.prompt_id!r}" if self.prompt_id else ""
            return f"the {self.backend} captioner, model {self.model!r}{prompt}"
        if self.kind == "files":
            what = "VLM captions imported from" if self.is_vlm else "human or imported captions,"
            return f"{what} file {self.file}"
        if self.kind == "mixed":
            return "captions of several captioners (" + "; ".join(self.parts) + ")"
        return "an unknown caption source (the bundle predates caption-source records)"

    @property
    def regenerable(self) -> bool:
        """Whether a captioner can make more captions of this kind."""
        return self.kind == "captioner" and self.backend in GENERATING_BACKENDS

    # -- persistence -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["id"] = self.id
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> CaptionSource:
        """The source a bundle recorded; missing or malformed -> ``unknown``."""
        if not isinstance(data, Mapping) or data.get("kind") not in KINDS:
            return cls()
        known = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in data.items() if k in known}
        kw["parts"] = [str(p) for p in kw.get("parts") or []]
        return cls(**kw)


def same_kind(trained: CaptionSource, used: CaptionSource) -> bool:
    """True when captions from `used` are of the kind the model was trained on.

    Captioners match on backend, model and prompt (hash, else id; the attribute captioner has no
    prompt but a version, its model). Files match files (human captions of new images necessarily
    come from another file). Unknown or mixed training sources match nothing.
    """
    if trained.kind == "captioner" and used.kind == "captioner":
        if (trained.backend, trained.model) != (used.backend, used.model):
            return False
        if trained.backend == "attributes":
            return True
        if trained.prompt_hash and used.prompt_hash:
            return trained.prompt_hash == used.prompt_hash
        return trained.prompt_id == used.prompt_id
    return trained.kind == "files" and used.kind == "files"


def _store_groups(path: Path) -> dict[tuple[Any, ...], dict[str, Any]] | None:
    """Distinct captioners of the records a store's captions come from (latest ok record per
    path), or None when the file is not a caption store."""
    from skyfuse.captioning.store import is_store_record, read_records

    records = read_records(path)
    if not records or not all(is_store_record(r) for r in records):
        return None
    latest: dict[str, dict[str, Any]] = {}
    for rec in records:
        if rec.get("status", "ok") != "ok" or rec.get("caption") is None:
            continue
        p = str(rec["path"])
        if p not in latest or str(rec.get("time", "")) >= str(latest[p].get("time", "")):
            latest[p] = rec
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for rec in latest.values():
        key = (rec.get("backend"), rec.get("model"), rec.get("prompt_id"), rec.get("prompt_hash"))
        groups.setdefault(key, rec)
    return groups


def _from_record(rec: Mapping[str, Any], path: Path) -> CaptionSource:
    from skyfuse.captioning.prompts import builtin_prompts

    backend = str(rec.get("backend") or "")
    model = str(rec.get("model") or "")
    raw = rec.get("params")
    params: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    if backend == "files" or backend not in GENERATING_BACKENDS:
        return CaptionSource(
            kind="files",
            backend=backend or None,
            model=model or None,
            file=str(params.get("source") or path),
            format=params.get("format"),
            is_vlm=bool(rec.get("is_vlm", False)),
        )
    if backend == "attributes":
        return CaptionSource(
            kind="captioner",
            backend=backend,
            model=model,
            file=str(path),
            format="store",
            is_vlm=False,
            attributes_version=model,
        )
    pid = rec.get("prompt_id")
    phash = rec.get("prompt_hash")
    text = None
    builtin = builtin_prompts().get(str(pid))
    if builtin is not None and (not phash or builtin.hash == phash):
        text = builtin.text
    return CaptionSource(
        kind="captioner",
        backend=backend,
        model=model,
        prompt_id=str(pid) if pid else None,
        prompt_text=text,
        prompt_hash=str(phash) if phash else None,
        file=str(path),
        format="store",
        is_vlm=bool(rec.get("is_vlm", True)),
    )


def source_of_file(source: str | Path) -> CaptionSource:
    """The source of a caption file or folder as training reads it (`load_captions` formats).

    A caption store says which captioner wrote each record; any other format (human caption sets,
    JSONL/CSV of path,caption, a text/ tree) is imported captions of kind ``files``.
    """
    from skyfuse.captioning.sources import read_source

    path = Path(source).expanduser()
    if path.is_file() and path.suffix.lower() == ".jsonl":
        groups = _store_groups(path)
        if groups:
            found = [_from_record(rec, path) for rec in groups.values()]
            kinds = {(s.kind, s.id if s.kind == "captioner" else "files") for s in found}
            if len(kinds) == 1:
                return found[0]
            return CaptionSource(
                kind="mixed", file=str(path), format="store", parts=sorted({s.id for s in found})
            )
    try:
        _, fmt = read_source(path)
    except Exception:  # unreadable here: training reads it and names the problem
        fmt = None
    return CaptionSource(kind="files", file=str(path), format=fmt, is_vlm=fmt == "text-tree")


def source_of_captioner(captioner: Any, prompt: Any | None = None) -> CaptionSource:
    """The source of a live captioner object (`skyfuse.captioning.Captioner`) with its prompt."""
    backend = str(getattr(captioner, "backend", "") or "")
    model = str(getattr(captioner, "model", "") or "")
    if backend not in GENERATING_BACKENDS:
        return CaptionSource(kind="files" if backend == "files" else "unknown", backend=backend)
    if backend == "attributes":
        return CaptionSource(
            kind="captioner", backend=backend, model=model, is_vlm=False, attributes_version=model
        )
    return CaptionSource(
        kind="captioner",
        backend=backend,
        model=model,
        prompt_id=getattr(prompt, "id", None),
        prompt_text=getattr(prompt, "text", None),
        prompt_hash=getattr(prompt, "hash", None),
        is_vlm=True,
    )
