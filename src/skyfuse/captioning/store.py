"""The caption store: an append-only JSONL file, one record per captioned image.

Why this shape: captioning costs seconds per image, so a run must survive kills and crashes. Every
record is written with a single `write` and `fsync`ed before the next image is counted as done, so a
kill loses at most the requests in flight. A kill can still leave a torn last line; it is cut off
(and kept in ``<store>.torn``) when the store is next opened. Failures are records too (``status:
"error"`` with the reason), so nothing is dropped silently, and they are retried by the next run.

Record fields: ``path`` (relative to the captioned folder), ``sha256`` (of the image bytes),
``caption`` (null for failures), ``backend``, ``model``, ``prompt_id``, ``prompt_hash``, ``params``,
``is_vlm``, ``time`` (UTC ISO-8601), ``latency_s``, ``status`` (``ok``/``error``), ``error``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from skyfuse.errors import BadInputError

REQUIRED_FIELDS = ("path", "sha256", "caption", "backend", "model", "prompt_id")

ResumeKey = tuple[str, str, str]


def resume_key(record: dict[str, Any]) -> ResumeKey:
    """What makes two records the same work: image bytes + model + prompt text."""
    return (str(record["sha256"]), str(record["model"]), str(record.get("prompt_hash", "")))


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def is_store_record(record: object) -> bool:
    return isinstance(record, dict) and all(k in record for k in ("path", "sha256", "backend"))


def read_records(path: Path, *, repair: bool = False) -> list[dict[str, Any]]:
    """Read every record; a torn last line is ignored (or cut off when `repair` is true).

    A corrupt line that is not the last one means the file was edited or damaged by something else
    than a kill, and is an error naming the line.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BadInputError(f"{path}: caption store not found; check the path") from None
    records: list[dict[str, Any]] = []
    end_ok = 0
    lines = data.split(b"\n")
    pos = 0
    for i, raw in enumerate(lines):
        last = i == len(lines) - 1
        line_end = pos + len(raw) + (0 if last else 1)
        if raw.strip():
            try:
                rec = json.loads(raw)
                if not isinstance(rec, dict):
                    raise ValueError("not an object")
            except ValueError:
                if last or (i == len(lines) - 2 and not lines[-1].strip()):
                    # torn tail (kill while writing), or a final line without a newline
                    if repair:
                        _cut_torn_tail(path, end_ok, data[end_ok:])
                    return records
                raise BadInputError(
                    f"{path}:{i + 1}: not a JSON record; delete that line (it will be redone)"
                ) from None
            if last and repair:  # complete JSON but no trailing newline: add the newline
                with open(path, "ab") as f:
                    f.write(b"\n")
                    f.flush()
                    os.fsync(f.fileno())
            records.append(rec)
        end_ok = line_end
        pos = line_end
    return records


def _cut_torn_tail(path: Path, keep: int, tail: bytes) -> None:
    with open(path.with_name(path.name + ".torn"), "ab") as f:
        f.write(tail + b"\n")
    with open(path, "r+b") as f:
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())


@dataclass
class StoreState:
    """What a store already holds, for resuming."""

    done: dict[ResumeKey, dict[str, Any]] = field(default_factory=dict)
    failed: dict[ResumeKey, dict[str, Any]] = field(default_factory=dict)
    #: (path, key) pairs with a successful record: an identical image at another path still needs
    #: its own record (copied, not re-captioned).
    paths: set[tuple[str, ResumeKey]] = field(default_factory=set)
    records: int = 0


class CaptionStore:
    """Append-only writer with an exclusive lock (two runs must not write one file).

    Use as a context manager. `append` writes and fsyncs one record.
    """

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._fd: int | None = None
        self.state = StoreState()

    def open(self) -> CaptionStore:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BadInputError(
                f"{self.path}: another captioning run is writing this store; wait for it, or give"
                " each run its own --out (with --shard i/n) and merge them"
            ) from None
        except ImportError:  # pragma: no cover - non-POSIX
            pass
        self._fd = fd
        try:
            # check before repairing: a file that is not a store is never modified
            if not all(is_store_record(r) for r in read_records(self.path)):
                raise BadInputError(
                    f"{self.path}: exists and is not a caption store (records need path, sha256,"
                    " backend); choose another --out, this file is left as it is"
                )
            for rec in read_records(self.path, repair=True):
                self._note(rec)
        except BaseException:
            self.close()
            raise
        return self

    def _note(self, rec: dict[str, Any]) -> None:
        self.state.records += 1
        key = resume_key(rec)
        if rec.get("status", "ok") == "ok" and rec.get("caption") is not None:
            self.state.done[key] = rec
            self.state.paths.add((str(rec["path"]), key))
            self.state.failed.pop(key, None)
        elif key not in self.state.done:
            self.state.failed[key] = rec

    def is_done(self, key: ResumeKey) -> bool:
        return key in self.state.done

    def has(self, path: str, key: ResumeKey) -> bool:
        """True when this path already has a successful record for this work."""
        return (path, key) in self.state.paths

    def append(self, rec: dict[str, Any]) -> None:
        """Write one record (one `write` call) and make it durable before returning."""
        self.append_many([rec])

    def append_many(self, recs: list[dict[str, Any]]) -> None:
        """Write records with one `write` and one `fsync` (group commit): each is durable before
        this returns. Records already in the store (same path and work) are not written again."""
        if self._fd is None:
            raise RuntimeError("CaptionStore is not open")
        fresh: list[dict[str, Any]] = []
        seen: set[tuple[str, ResumeKey]] = set()
        for rec in recs:
            pk = (str(rec["path"]), resume_key(rec))
            ok = rec.get("status", "ok") == "ok" and rec.get("caption") is not None
            if pk in self.state.paths or (ok and pk in seen):
                continue  # never a duplicate
            if ok:
                seen.add(pk)
            fresh.append(rec)
        if not fresh:
            return
        data = "".join(
            json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in fresh
        ).encode("utf-8")
        view = memoryview(data)
        while view:  # os.write may write less than asked for (signals, huge batches)
            view = view[os.write(self._fd, view) :]
        if self.fsync:
            os.fsync(self._fd)
        for rec in fresh:
            self._note(rec)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> CaptionStore:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_record(
    *,
    rel: str,
    sha256: str,
    caption: str | None,
    backend: str,
    model: str,
    prompt_id: str,
    prompt_hash: str,
    params: dict[str, Any],
    is_vlm: bool,
    latency_s: float,
    error: str | None = None,
) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "path": rel,
        "sha256": sha256,
        "caption": caption,
        "backend": backend,
        "model": model,
        "prompt_id": prompt_id,
        "prompt_hash": prompt_hash,
        "params": params,
        "is_vlm": is_vlm,
        "time": utc_now(),
        "latency_s": round(latency_s, 4),
        "status": "ok" if error is None else "error",
    }
    if error is not None:
        rec["error"] = error
    return rec


def latest_captions(records: Sequence[dict[str, Any]]) -> dict[str, str]:
    """path -> caption, successful records only; the latest record of a path wins."""
    best: dict[str, tuple[str, str]] = {}
    for rec in records:
        if rec.get("status", "ok") != "ok" or rec.get("caption") is None:
            continue
        t = str(rec.get("time", ""))
        p = str(rec["path"])
        if p not in best or t >= best[p][0]:
            best[p] = (t, str(rec["caption"]))
    return {p: c for p, (_, c) in sorted(best.items())}


# ----------------------------------------------------------------------------------- merging


@dataclass
class MergeConflict:
    path: str
    model: str
    prompt_id: str
    reason: str
    kept: str
    dropped: list[str]


@dataclass
class MergeReport:
    inputs: list[Path]
    records_in: int
    records_out: int
    duplicates: int
    conflicts: list[MergeConflict]
    failures_kept: int


def _iter_inputs(paths: Sequence[Path]) -> Iterator[tuple[Path, dict[str, Any]]]:
    for p in paths:
        for rec in read_records(Path(p)):
            if not is_store_record(rec):
                raise BadInputError(
                    f"{p}: not a caption store (records need path, sha256, backend)"
                )
            yield Path(p), rec


def merge_stores(inputs: Sequence[Path], out: Path) -> MergeReport:
    """Combine stores (e.g. shards) into one, written atomically.

    Per (path, model, prompt hash) one record is kept. Identical captions of the same image are
    duplicates. Different image bytes or different captions for the same key are conflicts: the most
    recent record is kept and the others are listed in the report. A failure is kept only where no
    store has a success for it, so the merged store still shows what remains to be done.
    """
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    n_in = 0
    for _, rec in _iter_inputs(inputs):
        n_in += 1
        key = (str(rec["path"]), str(rec["model"]), str(rec.get("prompt_hash", "")))
        groups.setdefault(key, []).append(rec)
    kept: list[dict[str, Any]] = []
    conflicts: list[MergeConflict] = []
    duplicates = 0
    failures = 0
    for (path, model, _), recs in sorted(groups.items()):
        ok = [r for r in recs if r.get("status", "ok") == "ok" and r.get("caption") is not None]
        if not ok:
            kept.append(max(recs, key=lambda r: str(r.get("time", ""))))
            failures += 1
            continue
        ok.sort(key=lambda r: str(r.get("time", "")))
        winner = ok[-1]
        distinct = {(r["sha256"], r["caption"]) for r in ok}
        duplicates += len(ok) - len(distinct)
        if len(distinct) > 1:
            shas = {r["sha256"] for r in ok}
            reason = "image bytes differ" if len(shas) > 1 else "captions differ"
            others = sorted({str(r["caption"]) for r in ok if r["caption"] != winner["caption"]})
            conflicts.append(
                MergeConflict(
                    path,
                    model,
                    str(winner.get("prompt_id")),
                    reason,
                    str(winner["caption"]),
                    others,
                )
            )
        kept.append(winner)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        for rec in kept:
            f.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)
    return MergeReport([Path(p) for p in inputs], n_in, len(kept), duplicates, conflicts, failures)


def monotonic() -> float:
    return time.perf_counter()
