"""Readers for captions that already exist, and the rule that joins several sentences.

Formats (picked from the path): a caption store or any JSONL with a path and a caption field; CSV/TSV
(path, caption); the paper's ``text/<Class>/<stem>.txt`` tree (or a dataset root holding ``text/``);
the ``*_filename.txt`` + ``*_caps.txt`` pairs of UCM-/Sydney-captions, RSICD and RSITMD (a folder of
them or one of the files); Karpathy ``dataset.json``; and JSON maps ``{"images": {name: [sentences]}}``.

Joining rule (`join_sentences`): each sentence is cleaned (whitespace collapsed, the space before
punctuation removed, first letter capitalised, a final period added); sentences equal after
lower-casing and dropping punctuation are kept once, in first-seen order; the rest are joined with a
single space. Human sets often repeat one sentence five times, which then becomes one sentence.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from skyfuse.errors import BadInputError

PATH_FIELDS = ("path", "rel", "image", "file", "filename", "file_name", "name", "image_path")
CAPTION_FIELDS = ("caption", "text", "description", "captions", "sentences", "raw")

Raw = dict[str, list[str]]


def clean_sentence(s: str) -> str:
    s = " ".join(str(s).split())
    s = re.sub(r"\s+([.,;:!?])", r"\1", s)
    if not s:
        return ""
    s = s[0].upper() + s[1:]
    if s[-1] not in ".!?":
        s += "."
    return s


def _dedup_key(s: str) -> str:
    return re.sub(r"[^a-z0-9 ]+", "", s.lower()).strip()


def join_sentences(sentences: Iterable[str]) -> str:
    """The documented rule above: clean, de-duplicate (order kept), join with one space."""
    seen: set[str] = set()
    out: list[str] = []
    for raw in sentences:
        s = clean_sentence(raw)
        k = _dedup_key(s)
        if s and k not in seen:
            seen.add(k)
            out.append(s)
    return " ".join(out)


def _sentences(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        for k in ("raw", "caption", "text", "sentence", "sentences", "captions"):
            if k in value:
                return _sentences(value[k])
        return []
    if isinstance(value, list):
        return [s for v in value for s in _sentences(v)]
    return [str(value)]


def _pick(rec: dict[str, Any], fields: tuple[str, ...], what: str, where: str) -> Any:
    for f in fields:
        if f in rec:
            return rec[f]
    raise BadInputError(f"{where}: no {what} field (expected one of {', '.join(fields)})")


def read_jsonl(path: Path) -> tuple[Raw, bool]:
    """Returns (captions, is_store). Store records: successes only, latest per path."""
    from skyfuse.captioning.store import is_store_record, latest_captions, read_records

    records = read_records(path)
    if records and all(is_store_record(r) for r in records):
        return {k: [v] for k, v in latest_captions(records).items()}, True
    out: Raw = {}
    for i, rec in enumerate(records, 1):
        where = f"{path}:{i}"
        key = str(_pick(rec, PATH_FIELDS, "path", where))
        out.setdefault(key, []).extend(_sentences(_pick(rec, CAPTION_FIELDS, "caption", where)))
    return out, False


def read_csv(path: Path) -> Raw:
    text = path.read_text(encoding="utf-8-sig")
    dialect = "excel-tab" if path.suffix.lower() == ".tsv" else "excel"
    rows = list(csv.reader(text.splitlines(), dialect=dialect))
    if not rows:
        return {}
    header = [h.strip().lower() for h in rows[0]]
    pi = next((header.index(f) for f in PATH_FIELDS if f in header), None)
    ci = next((header.index(f) for f in CAPTION_FIELDS if f in header), None)
    body = rows[1:]
    if pi is None or ci is None:
        if len(header) == 2 and not any(h in PATH_FIELDS for h in header):
            pi, ci, body = 0, 1, rows  # no header row: path, caption
        else:
            raise BadInputError(
                f"{path}: needs a header with a path column ({'/'.join(PATH_FIELDS[:3])}) and a"
                " caption column (caption/text)"
            )
    out: Raw = {}
    for n, row in enumerate(body, 2):
        if not row or not any(c.strip() for c in row):
            continue
        if len(row) <= max(pi, ci):
            raise BadInputError(f"{path}:{n}: expected at least {max(pi, ci) + 1} columns")
        out.setdefault(row[pi].strip(), []).append(row[ci])
    return out


def read_json(path: Path) -> Raw:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise BadInputError(f"{path}: not valid JSON ({exc}); fix or re-export it") from None
    out: Raw = {}
    images = data.get("images") if isinstance(data, dict) else data
    if isinstance(images, list):  # Karpathy dataset.json
        for i, item in enumerate(images):
            if not isinstance(item, dict):
                raise BadInputError(f"{path}: images[{i}] is not an object")
            name = item.get("filename") or item.get("file_name") or item.get("path")
            if name is None:
                raise BadInputError(f"{path}: images[{i}] has no filename")
            folder = item.get("filepath")
            key = f"{folder}/{name}" if folder and "/" not in str(name) else str(name)
            out.setdefault(key, []).extend(_sentences(item.get("sentences", item.get("captions"))))
        return out
    if isinstance(images, dict):
        for name, value in images.items():
            out.setdefault(str(name), []).extend(_sentences(value))
        return out
    raise BadInputError(
        f"{path}: unknown JSON caption format; expected Karpathy dataset.json or"
        ' {"images": {name: [sentences]}}'
    )


def read_text_tree(text_root: Path) -> Raw:
    """``<Class>/<stem>.txt`` -> key ``<Class>/<stem>`` (the image extension is unknown here)."""
    out: Raw = {}
    for p in sorted(text_root.glob("*/*.txt")):
        if p.name.startswith(".") or p.parent.name.startswith("."):
            continue
        out[f"{p.parent.name}/{p.stem}"] = [p.read_text(encoding="utf-8", errors="replace").strip()]
    return out


def _lines(path: Path) -> list[str]:
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def read_caps_pairs(files: list[tuple[Path, Path]]) -> Raw:
    """``*_filename.txt`` + ``*_caps.txt``: either one name per caption line, or k captions per name
    in order (UCM/RSICD train files list each name once with 5 caption lines)."""
    out: Raw = {}
    for names_p, caps_p in files:
        # empty caption lines keep their position (RSITMD has some), only trailing ones are dropped
        names = _lines(names_p)
        caps = _lines(caps_p)
        if not names:
            continue
        pairs: Iterable[tuple[str, str]]
        if len(names) == len(caps):
            pairs = zip(names, caps, strict=True)
        elif len(caps) % len(names) == 0:
            k = len(caps) // len(names)
            pairs = ((names[i // k], c) for i, c in enumerate(caps))
        else:
            raise BadInputError(
                f"{caps_p}: {len(caps)} caption lines do not fit the {len(names)} names in"
                f" {names_p.name}; they must be equal or a whole multiple"
            )
        for name, cap in pairs:
            if name:
                out.setdefault(name, [])
                if cap:
                    out[name].append(cap)
    return out


def caps_pairs_in(folder: Path) -> list[tuple[Path, Path]]:
    pairs = []
    for names_p in sorted(folder.glob("*_filename.txt")):
        caps_p = names_p.with_name(names_p.name[: -len("_filename.txt")] + "_caps.txt")
        if caps_p.is_file():
            pairs.append((names_p, caps_p))
    return pairs


def read_source(source: Path) -> tuple[Raw, str]:
    """Read any supported source; returns (name -> sentences, format name)."""
    source = Path(source).expanduser()
    if not source.exists():
        raise BadInputError(f"{source}: caption source not found; check the path")
    if source.is_dir():
        if caps_pairs_in(source):
            return read_caps_pairs(caps_pairs_in(source)), "caps-txt"
        if (source / "text").is_dir():
            return read_text_tree(source / "text"), "text-tree"
        for name in ("dataset.json", "captions.jsonl"):
            if (source / name).is_file():
                return read_source(source / name)
        if any(source.glob("*/*.txt")):
            return read_text_tree(source), "text-tree"
        raise BadInputError(
            f"{source}: no captions found; expected text/<Class>/<stem>.txt, *_filename.txt +"
            " *_caps.txt, dataset.json, or a .jsonl/.csv file"
        )
    suffix = source.suffix.lower()
    name = source.name
    if name.endswith(("_filename.txt", "_caps.txt")):
        stem = name.rsplit("_", 1)[0]
        pair = (source.with_name(stem + "_filename.txt"), source.with_name(stem + "_caps.txt"))
        if not pair[0].is_file() or not pair[1].is_file():
            raise BadInputError(f"{source}: needs both {pair[0].name} and {pair[1].name}")
        return read_caps_pairs([pair]), "caps-txt"
    if suffix == ".jsonl":
        raw, is_store = read_jsonl(source)
        return raw, "store" if is_store else "jsonl"
    if suffix in (".csv", ".tsv"):
        return read_csv(source), "csv"
    if suffix == ".json":
        return read_json(source), "json"
    raise BadInputError(
        f"{source}: unsupported caption file; use .jsonl, .csv/.tsv, .json, *_caps.txt or a folder"
    )
