"""Prediction files: append-only JSONL or CSV that a killed run resumes without duplicates.

Why append-only: a prediction run over a large folder can be stopped at any time; records are flushed
per batch, the paths already written are skipped on the next run, and a torn last JSONL line or CSV row
(a kill mid-write) is cut off on open instead of poisoning the file.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from skyfuse.errors import BadInputError
from skyfuse.inference.predictor import Prediction

FORMATS = ("jsonl", "csv")


def format_for(path: Path) -> str:
    """Output format from the file suffix (.jsonl / .json lines, or .csv)."""
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".ndjson"}:
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    raise BadInputError(
        f"{path}: unknown output format {suffix or '(none)'}; name it .jsonl or .csv"
    )


#: Columns before the labels; `caption_source` / `caption_mismatch` are an interface contract.
CSV_FIELDS = ["path", "caption", "caption_source", "caption_mismatch", "error"]


def csv_header(top_k: int) -> list[str]:
    cols = list(CSV_FIELDS)
    for i in range(1, top_k + 1):
        cols += [f"label_{i}", f"prob_{i}"]
    return cols


def _repair_jsonl(path: Path) -> set[str]:
    """Paths already in a JSONL file; a torn (unparsable, unterminated) last line is truncated."""
    done: set[str] = set()
    data = path.read_bytes()
    good_end = 0
    pos = 0
    for line in data.splitlines(keepends=True):
        pos += len(line)
        text = line.strip()
        if not text:
            good_end = pos
            continue
        try:
            rec = json.loads(text)
        except json.JSONDecodeError:
            if pos == len(data) and not line.endswith(b"\n"):
                break  # torn tail from a kill: cut it
            lineno = data[:pos].count(b"\n")
            raise BadInputError(
                f"{path}: line {lineno} is not JSON; fix or delete the file"
            ) from None
        if not line.endswith(b"\n"):
            # complete record without its newline: keep it, add the newline
            with open(path, "ab") as f:
                f.write(b"\n")
        if isinstance(rec, dict) and "path" in rec and not rec.get("error"):
            done.add(str(rec["path"]))  # a failed record is retried by the next run
        good_end = pos
    if good_end < len(data):
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return done


def _read_csv(path: Path, top_k: int) -> set[str]:
    """Paths already in a CSV file; a torn last row (a kill mid-write: too few fields, or no final
    newline, which may hide a cut-off number) is truncated so that image is predicted again."""
    text = path.read_bytes().decode("utf-8", errors="surrogateescape")
    parts = text.split("\n")
    pieces = [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    starts = [0]
    for piece in pieces:
        starts.append(starts[-1] + len(piece))
    reader = csv.reader(pieces)
    header = next(reader, None)
    if header is None:
        return set()
    if header != csv_header(top_k):
        if header[: len(CSV_FIELDS)] != CSV_FIELDS:
            raise BadInputError(
                f"{path}: written by an older skyfuse (no caption_source column); choose another"
                " --out"
            )
        k = (len(header) - len(CSV_FIELDS)) // 2
        raise BadInputError(
            f"{path}: written with --top-k {k}; resume with --top-k {k} or choose another --out"
        )
    done: set[str] = set()
    cut: int | None = None
    while True:
        first = reader.line_num
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error:
            cut = starts[first]
            break
        if not row:
            continue
        last = reader.line_num
        if len(row) == len(header) and pieces[last - 1].endswith("\n"):
            if not row[4]:  # a failed row (error column) is retried by the next run
                done.add(row[0])
        elif last == len(pieces):
            cut = starts[first]
            break
        else:
            raise BadInputError(
                f"{path}: line {last} is not a complete prediction row; fix or delete the file"
            )
    if cut is not None:
        with open(path, "r+b") as f:
            f.truncate(len(text[:cut].encode("utf-8", errors="surrogateescape")))
    return done


class PredictionWriter:
    """Appends prediction records; `done` holds the paths already present (for resume)."""

    def __init__(self, path: str | Path, *, top_k: int, extra_fields: Sequence[str] = ()) -> None:
        self.path = Path(path)
        self.format = format_for(self.path)
        self.top_k = top_k
        self.extra_fields = tuple(extra_fields)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        exists = self.path.is_file() and self.path.stat().st_size > 0
        if not exists:
            self.done: set[str] = set()
        elif self.format == "jsonl":
            self.done = _repair_jsonl(self.path)
        else:
            self.done = _read_csv(self.path, top_k)
        self._fh: TextIO = open(self.path, "a", encoding="utf-8", newline="")  # noqa: SIM115
        self._csv = csv.writer(self._fh) if self.format == "csv" else None
        if self._csv is not None and not exists:
            self._csv.writerow(csv_header(top_k))

    def write(self, path: str, prediction: Prediction, **extra: Any) -> None:
        """Append one record (not yet flushed; call `flush` after a batch)."""
        if self._csv is not None:
            row: list[Any] = [
                path,
                "" if prediction.caption is None else prediction.caption,
                prediction.caption_source,
                "true" if prediction.caption_mismatch else "false",
                prediction.error or "",
            ]
            for i in range(self.top_k):
                if i < len(prediction.top_k):
                    t = prediction.top_k[i]
                    row += [t.label, f"{t.prob:.6f}"]
                else:
                    row += ["", ""]
            self._csv.writerow(row)
        else:
            rec = {"path": path, **prediction.to_dict(), **extra}
            self._fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self.done.add(path)

    def flush(self) -> None:
        """Flush and fsync, so a kill loses at most the batch in flight."""
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if not self._fh.closed:
            self.flush()
            self._fh.close()

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def read_predictions(path: str | Path) -> list[dict[str, Any]]:
    """Records of a JSONL or CSV prediction file, as dicts with `path`, `top_k`, `caption`,
    `caption_source`, `caption_mismatch` (and `error` for a failed one); where a failed record was
    retried by a later run, the later record replaces it (file order is kept otherwise)."""
    path = Path(path)
    records: list[dict[str, Any]] = []
    if format_for(path) == "jsonl":
        with open(path, encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
    else:
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                top = []
                i = 1
                while f"label_{i}" in row:
                    if row[f"label_{i}"]:
                        top.append({"label": row[f"label_{i}"], "prob": float(row[f"prob_{i}"])})
                    i += 1
                source = row.get("caption_source", "")
                rec: dict[str, Any] = {
                    "path": row["path"],
                    "caption": None if source == "none" or row.get("error") else row["caption"],
                    "caption_source": source,
                    "caption_mismatch": row.get("caption_mismatch") == "true",
                    "top_k": top,
                }
                if row.get("error"):
                    rec["error"] = row["error"]
                records.append(rec)
    latest: dict[str, dict[str, Any]] = {}
    for rec in records:
        latest[str(rec.get("path"))] = rec
    return list(latest.values())
