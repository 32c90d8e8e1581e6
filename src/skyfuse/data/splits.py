"""Seeded, stratified train / val / test splits, saved as JSON and checked against their folder.

Why: RSSC results are only comparable on the field's ratio protocols (AID 20/80, NWPU 10/90, ...) over
repeated seeded splits. The test part is fixed first; validation is carved from the training part, so the
test images are never used for model selection. A split records a fingerprint of the folder (sorted
relative paths and byte sizes) so that a changed folder is caught before a number is reported on it.

Each class is shuffled with its own generator derived from ``(seed, class name)``: adding or removing a
class does not reshuffle the others.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from skyfuse.data.folder import Sample, SceneFolder
from skyfuse.errors import BadInputError, ConfigError
from skyfuse.registry import Registry

SPLIT_FORMAT = 1
log = logging.getLogger(__name__)
PARTS = ("train", "val", "test")


@dataclass(frozen=True)
class Protocol:
    """A published evaluation ratio: the fraction of each class used for training."""

    name: str
    dataset: str
    train: float
    note: str = ""


PROTOCOLS: Registry[Protocol] = Registry("split protocol")

for _p in (
    Protocol("ucm-80", "ucm", 0.8, "UC Merced 80/20 (the usual UCM ratio)"),
    Protocol("ucm-50", "ucm", 0.5, "UC Merced 50/50"),
    Protocol("aid-20", "aid", 0.2, "AID 20/80"),
    Protocol("aid-50", "aid", 0.5, "AID 50/50"),
    Protocol("nwpu-10", "nwpu-resisc45", 0.1, "NWPU-RESISC45 10/90"),
    Protocol("nwpu-20", "nwpu-resisc45", 0.2, "NWPU-RESISC45 20/80"),
    Protocol("whu-60", "whu-rs19", 0.6, "WHU-RS19 60/40"),
    Protocol("whu-40", "whu-rs19", 0.4, "WHU-RS19 40/60"),
    Protocol("rsscn7-50", "rsscn7", 0.5, "RSSCN7 50/50"),
    Protocol("rsscn7-20", "rsscn7", 0.2, "RSSCN7 20/80 (used by some papers)"),
    Protocol("patternnet-80", "patternnet", 0.8, "PatternNet 80/20"),
    Protocol("patternnet-50", "patternnet", 0.5, "PatternNet 50/50"),
    Protocol("eurosat-80", "eurosat-rgb", 0.8, "EuroSAT-RGB 80/20"),
    Protocol("eurosat-50", "eurosat-rgb", 0.5, "EuroSAT-RGB 50/50"),
):
    PROTOCOLS.add(_p.name, _p)


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name`` (case-insensitive); unknown names list the known ones."""
    return PROTOCOLS.get(name)


def list_protocols(dataset: str | None = None) -> list[str]:
    """Protocol names, optionally only those of one registry dataset."""
    return [n for n in PROTOCOLS if dataset is None or PROTOCOLS.get(n).dataset == dataset.lower()]


def folder_fingerprint(folder: SceneFolder) -> str:
    """sha256 over the sorted ``rel<TAB>size`` lines of every image: cheap (stat only), and it
    changes when a file is added, removed, renamed, moved to another class or rewritten at a new size."""
    h = hashlib.sha256()
    for rel, path in sorted((s.rel, s.path) for s in folder.samples):
        try:
            size = path.stat().st_size
        except OSError:
            size = -1
        h.update(f"{rel}\t{size}\n".encode())
    return h.hexdigest()


@dataclass
class Split:
    """Lists of relative image paths (``Class/file.jpg``) per part, with the class index and provenance."""

    classes: list[str]
    train: list[str]
    val: list[str]
    test: list[str]
    seed: int
    protocol: str | None
    fingerprint: str
    train_ratio: float = 0.0
    val_ratio: float = 0.0
    source: str = ""
    synthetic: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ access

    def part(self, name: str) -> list[str]:
        """One part by name: ``train``, ``val``, ``test``, or ``trainval`` (for a final refit)."""
        key = name.lower()
        if key == "trainval":
            return [*self.train, *self.val]
        if key not in PARTS:
            raise ConfigError(f"unknown split part {name!r}; use train, val, test or trainval")
        return list(getattr(self, key))

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}

    def label(self, rel: str) -> int:
        """Class index of a relative path (its first component names the class)."""
        name = rel.split("/", 1)[0]
        try:
            return self.class_to_idx[name]
        except KeyError:
            raise BadInputError(
                f"{rel}: class {name!r} is not in this split's class list"
            ) from None

    def labels(self, name: str) -> list[int]:
        return [self.label(r) for r in self.part(name)]

    def samples(self, folder: SceneFolder, name: str) -> list[Sample]:
        """The folder's samples of one part, in split order (raises if a listed file is gone)."""
        index = folder.by_rel()
        missing = [r for r in self.part(name) if r not in index]
        if missing:
            raise BadInputError(
                f"{folder.image_root}: {len(missing)} file(s) of the {name} split are missing,"
                f" e.g. {missing[0]}; restore them or make a new split"
            )
        return [index[r] for r in self.part(name)]

    def counts(self) -> dict[str, dict[str, int]]:
        """Per part, images per class (for reports and the JSON file)."""
        out: dict[str, dict[str, int]] = {}
        for p in PARTS:
            c = dict.fromkeys(self.classes, 0)
            for r in self.part(p):
                c[r.split("/", 1)[0]] += 1
            out[p] = c
        return out

    # ------------------------------------------------------------------ persistence

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SPLIT_FORMAT,
            "protocol": self.protocol,
            "seed": self.seed,
            "train_ratio": self.train_ratio,
            "val_ratio": self.val_ratio,
            "classes": self.classes,
            "fingerprint": self.fingerprint,
            "source": self.source,
            "synthetic": self.synthetic,
            "counts": {p: sum(c.values()) for p, c in self.counts().items()},
            "extra": self.extra,
            "train": self.train,
            "val": self.val,
            "test": self.test,
        }

    def save(self, path: str | Path) -> Path:
        """Write the split as JSON atomically (a temp file renamed into place)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.to_dict(), f, indent=1, ensure_ascii=False)
                f.write("\n")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | Path) -> Split:
        """Read a split JSON; malformed files raise `BadInputError` naming the file."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BadInputError(
                f"{path}: split file not found; make one with `skyfuse split`"
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadInputError(
                f"{path}: not a valid split JSON ({exc}); make a new one with `skyfuse split`"
            ) from None
        return cls.from_dict(raw, path)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], path: str | Path = "<split>") -> Split:
        if not isinstance(raw, Mapping):
            raise BadInputError(
                f"{path}: a split JSON must be an object; make one with `skyfuse split`"
            )
        missing = [
            k for k in ("classes", "train", "val", "test", "seed", "fingerprint") if k not in raw
        ]
        if missing:
            raise BadInputError(
                f"{path}: split JSON lacks {', '.join(missing)}; make a new one with `skyfuse split`"
            )
        if int(raw.get("format", SPLIT_FORMAT)) > SPLIT_FORMAT:
            raise BadInputError(f"{path}: split format {raw['format']} is newer; upgrade skyfuse")
        split = cls(
            classes=[str(c) for c in raw["classes"]],
            train=[str(r) for r in raw["train"]],
            val=[str(r) for r in raw["val"]],
            test=[str(r) for r in raw["test"]],
            seed=int(raw["seed"]),
            protocol=raw.get("protocol"),
            fingerprint=str(raw["fingerprint"]),
            train_ratio=float(raw.get("train_ratio", 0.0)),
            val_ratio=float(raw.get("val_ratio", 0.0)),
            source=str(raw.get("source", "")),
            synthetic=bool(raw.get("synthetic", False)),
            extra=dict(raw.get("extra") or {}),
        )
        split._check_consistent(path)
        return split

    def _check_consistent(self, path: str | Path) -> None:
        seen: set[str] = set()
        known = set(self.classes)
        for p in PARTS:
            for r in self.part(p):
                if r in seen:
                    raise BadInputError(
                        f"{path}: {r} appears twice across the split parts; remake it"
                    )
                seen.add(r)
                if r.split("/", 1)[0] not in known:
                    raise BadInputError(f"{path}: {r} belongs to no listed class; remake the split")

    # ------------------------------------------------------------------ verification

    def verify(self, folder: SceneFolder | str | Path) -> None:
        """Raise `BadInputError` when ``folder`` is not the folder this split was made from."""
        if not isinstance(folder, SceneFolder):
            folder = SceneFolder(folder)
        if folder.classes != self.classes:
            extra = sorted(set(folder.classes) - set(self.classes))
            gone = sorted(set(self.classes) - set(folder.classes))
            raise BadInputError(
                f"{folder.root}: classes differ from the split's (new: {extra or '-'},"
                f" missing: {gone or '-'}); make a new split with `skyfuse split`"
            )
        if folder_fingerprint(folder) == self.fingerprint:
            return
        listed = set(self.train) | set(self.val) | set(self.test)
        present = {s.rel for s in folder.samples}
        gone_files = sorted(listed - present)
        new_files = sorted(present - listed)
        detail = []
        if gone_files:
            detail.append(f"{len(gone_files)} missing, e.g. {gone_files[0]}")
        if new_files:
            detail.append(f"{len(new_files)} new, e.g. {new_files[0]}")
        if not detail:
            detail.append("same names but some file sizes changed")
        raise BadInputError(
            f"{folder.root}: folder changed since the split was made ({'; '.join(detail)});"
            " restore it or make a new split with `skyfuse split`"
        )


# ---------------------------------------------------------------------- making splits


def _class_rng(seed: int, name: str) -> np.random.Generator:
    digest = hashlib.sha256(f"split:{seed}:{name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _round_half_up(x: float) -> int:
    """Round 2.5 to 3 (Python's round() gives 2), with a tolerance for float noise (0.1 * 700)."""
    return math.floor(x + 0.5 + 1e-9)


def _cut(n: int, ratio: float) -> int:
    """How many of ``n`` go to the first part: rounded, but both parts non-empty when n >= 2."""
    k = _round_half_up(ratio * n)
    if n >= 2:
        k = min(max(k, 1), n - 1)
    return k


def make_split(
    folder: SceneFolder,
    *,
    protocol: str | None = None,
    train: float | None = None,
    val: float = 0.1,
    seed: int = 0,
) -> Split:
    """A stratified split of ``folder``.

    Give either ``protocol`` (a name from `list_protocols`, e.g. ``aid-20``) or ``train`` (the training
    fraction of each class, 0 < train < 1). ``val`` is the fraction of each class's *training* part moved
    to validation (0 disables validation). Byte-identical images are kept in one part
    (`keep_duplicates_together`); ``split.extra["duplicates"]`` records how many groups of them there
    are and how many were moved, and a warning is logged when any moved.
    """
    if (protocol is None) == (train is None):
        raise ConfigError("give exactly one of protocol (e.g. aid-20) or train (e.g. 0.8)")
    if protocol is not None:
        proto = get_protocol(protocol)
        ratio, name = proto.train, proto.name
    else:
        assert train is not None
        ratio, name = float(train), None
    if not 0.0 < ratio < 1.0:
        raise ConfigError(f"train fraction must be between 0 and 1 (exclusive), got {ratio}")
    if not 0.0 <= val < 1.0:
        raise ConfigError(f"val fraction must be in [0, 1), got {val}")
    if len(folder.classes) < 2:
        raise BadInputError(
            f"{folder.image_root}: only {len(folder.classes)} class folder"
            f" ({', '.join(folder.classes) or 'none'}); a classification split needs at least two"
        )
    by_class: dict[str, list[str]] = {c: [] for c in folder.classes}
    for s in folder.samples:
        by_class[s.class_name].append(s.rel)
    parts: dict[str, list[str]] = {p: [] for p in PARTS}
    for name_c in folder.classes:
        rels = sorted(by_class[name_c])
        order = _class_rng(seed, name_c).permutation(len(rels))
        shuffled = [rels[i] for i in order]
        n_trainval = _cut(len(shuffled), ratio)
        trainval, test = shuffled[:n_trainval], shuffled[n_trainval:]
        n_val = _round_half_up(val * len(trainval))
        if val > 0 and n_val == 0 and len(trainval) >= 3:
            n_val = 1
        n_val = min(n_val, max(len(trainval) - 1, 0))
        parts["val"] += trainval[:n_val]
        parts["train"] += trainval[n_val:]
        parts["test"] += test
    groups, moved = keep_duplicates_together(folder, parts)
    if moved:
        log.warning(
            "%s: %d of %d group(s) of byte-identical images moved into one split part each",
            folder.image_root,
            moved,
            groups,
        )
    if not parts["test"]:
        raise BadInputError(
            f"{folder.image_root}: no class has enough images to leave one for testing at train"
            f" fraction {ratio}; add images or lower the train fraction"
        )
    from skyfuse.data.synthetic import is_synthetic

    return Split(
        classes=list(folder.classes),
        train=parts["train"],
        val=parts["val"],
        test=parts["test"],
        seed=seed,
        protocol=name,
        fingerprint=folder_fingerprint(folder),
        train_ratio=ratio,
        val_ratio=val,
        source=folder.root.name,
        synthetic=is_synthetic(folder.root),
        extra={"duplicates": {"groups": groups, "moved_groups": moved}} if groups else {},
    )


def duplicate_groups(folder: SceneFolder) -> list[list[str]]:
    """Groups (two or more, sorted) of byte-identical images, each group sorted.

    Only files whose byte size occurs more than once are hashed (identical bytes mean equal sizes), so
    a folder without duplicates costs a stat per file.
    """
    from skyfuse.data.images import sha256_file

    by_size: dict[int, list[Sample]] = {}
    for s in folder.samples:
        try:
            by_size.setdefault(s.path.stat().st_size, []).append(s)
        except OSError:
            continue
    by_hash: dict[str, list[str]] = {}
    for same in by_size.values():
        if len(same) < 2:
            continue
        for s in same:
            try:
                by_hash.setdefault(sha256_file(s.path), []).append(s.rel)
            except OSError:
                continue
    return sorted(sorted(g) for g in by_hash.values() if len(g) > 1)


def keep_duplicates_together(folder: SceneFolder, parts: dict[str, list[str]]) -> tuple[int, int]:
    """Move every group of byte-identical images into one part, in place; returns (groups, moved).

    A copy of a test image in train inflates accuracy. A group split across parts goes whole to the
    part that holds most of it (ties: train, then val, then test), so the test part never gains an
    image drawn for training. Orders within parts are kept.
    """
    groups = duplicate_groups(folder)
    if not groups:
        return 0, 0
    where = {r: p for p in PARTS for r in parts[p]}
    moves: dict[str, str] = {}
    for group in groups:
        held = [where[r] for r in group if r in where]
        if len(set(held)) < 2:
            continue
        target = max(PARTS, key=lambda p: (held.count(p), -PARTS.index(p)))
        moves.update({r: target for r in group if where.get(r) not in (None, target)})
    if not moves:
        return len(groups), 0
    for p in PARTS:
        parts[p] = [r for r in parts[p] if r not in moves]
    for r in sorted(moves):
        parts[moves[r]].append(r)
    moved = sum(1 for g in groups if any(r in moves for r in g))
    return len(groups), moved


# ---------------------------------------------------------------------- caption leakage


def _normalise_caption(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower()).strip().rstrip(".!").strip()


def caption_overlap(
    captions: Mapping[str, str],
    split: Split,
    *,
    part: str = "test",
    against: Sequence[str] = ("train", "val"),
) -> int:
    """How many ``part`` images have a caption that also occurs word for word in the ``against`` parts.

    Comparison ignores case, runs of white space and a final full stop. Images without a caption are
    not counted. Why: templated or repeated captions let a text model memorise labels; the leakage audit
    reports this count next to the class-name leakage rate.
    """
    seen = {
        _normalise_caption(captions[r]) for p in against for r in split.part(p) if r in captions
    }
    seen.discard("")
    return sum(
        1
        for r in split.part(part)
        if r in captions and (t := _normalise_caption(captions[r])) and t in seen
    )


@dataclass(frozen=True)
class SplitJob:
    """What `skyfuse split` makes: a split of the folder at `path` by protocol or training ratio."""

    path: Path
    protocol: str | None = None
    train: float | None = None
    val: float = 0.1
    seed: int = 0


@dataclass
class SplitResult:
    """The split and, when a named protocol is used on another dataset's classes, a warning."""

    split: Split
    warning: str | None = None


def run_split(job: SplitJob) -> SplitResult:
    """Make the split (not saved). Why the warning: a protocol belongs to one dataset; on another
    folder only its ratio means anything, and the user should know the name does not apply."""
    if job.protocol is None and job.train is None:
        raise ConfigError(f"give --protocol ({', '.join(list_protocols())}) or --train FRACTION")
    folder = SceneFolder(job.path)
    split = make_split(folder, protocol=job.protocol, train=job.train, val=job.val, seed=job.seed)
    warning = None
    if job.protocol is not None:
        from skyfuse.data.catalog import match_dataset

        proto = get_protocol(job.protocol)
        matched = match_dataset(folder.classes)
        if matched is None or matched.name != proto.dataset:
            warning = (
                f"{proto.name} is the {proto.dataset} protocol but the classes of {job.path} do"
                f" not match {proto.dataset}; only its ratio ({proto.train:g}) is used"
            )
    return SplitResult(split, warning)


__all__ = [
    "PROTOCOLS",
    "Protocol",
    "Split",
    "SplitJob",
    "SplitResult",
    "caption_overlap",
    "duplicate_groups",
    "folder_fingerprint",
    "get_protocol",
    "keep_duplicates_together",
    "list_protocols",
    "make_split",
    "run_split",
]
