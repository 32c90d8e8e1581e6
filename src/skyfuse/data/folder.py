"""Scene folders: the class-sub-folder layout every RSSC dataset ships in.

Two layouts are recognised:
- plain: ``root/<Class>/<image>``;
- paper: ``root/image/<Class>/<stem>.<ext>`` with captions in ``root/text/<Class>/<stem>.txt``.

Scanning lists files only (fast, no decoding); decoding problems surface where images are read and
are reported per file (`skyfuse datasets check` decodes everything up front).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from skyfuse.data.images import is_image_file
from skyfuse.errors import BadInputError


@dataclass(frozen=True)
class Sample:
    """One image of a scene folder. `rel` is the POSIX path relative to the image root."""

    path: Path
    rel: str
    label: int
    class_name: str
    text_path: Path | None = None


@dataclass
class ScanReport:
    """What the scan skipped, so counts stay honest."""

    hidden: list[str] = field(default_factory=list)
    non_images: list[str] = field(default_factory=list)
    empty_classes: list[str] = field(default_factory=list)
    nested_only_classes: list[str] = field(default_factory=list)
    loose_files: list[str] = field(default_factory=list)
    metadata: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    def warnings(self, root: Path) -> list[str]:
        out = []
        for name in self.empty_classes:
            out.append(f"{root / name}: class folder is empty; add images or remove the folder")
        for name in self.nested_only_classes:
            out.append(
                f"{root / name}: holds only sub-folders; put the images directly in the class folder"
            )
        if self.non_images:
            out.append(
                f"{len(self.non_images)} non-image file(s) ignored, e.g. {self.non_images[0]}"
            )
        if self.hidden:
            out.append(f"{len(self.hidden)} hidden file(s) ignored")
        if self.unreadable:
            out.append(
                f"{len(self.unreadable)} image name(s) that are not readable files skipped,"
                f" e.g. {root / self.unreadable[0]}; replace or remove them"
            )
        if self.loose_files:
            out.append(
                f"{len(self.loose_files)} file(s) directly in {root} ignored (not in a class folder)"
            )
        return out


def _readable_file(path: Path) -> bool:
    """A regular file we may open (a folder named ``x.jpg`` or a broken link is not)."""
    return path.is_file() and os.access(path, os.R_OK)


def _visible_dirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


class SceneFolder:
    """A dataset of images in class sub-folders. Class order is the sorted folder names.

    Args:
        root: the dataset folder (plain or paper layout).
        classes: optional fixed class list (e.g. from a split or a trained model); folders not in it
            are ignored and missing ones raise.
    """

    def __init__(self, root: str | Path, classes: list[str] | None = None) -> None:
        self.root = Path(root).expanduser()
        if not self.root.exists():
            raise BadInputError(f"{self.root}: folder does not exist; check the path")
        if not self.root.is_dir():
            raise BadInputError(f"{self.root}: is a file; give the dataset folder instead")
        paper = (self.root / "image").is_dir() and any(_visible_dirs(self.root / "image"))
        self.layout = "paper" if paper else "plain"
        self.image_root = self.root / "image" if paper else self.root
        text_root = self.root / "text"
        self.text_root: Path | None = text_root if paper and text_root.is_dir() else None
        self.report = ScanReport()
        self.samples: list[Sample] = []
        self.classes: list[str] = []
        self._scan(classes)

    def _scan(self, fixed: list[str] | None) -> None:
        class_dirs = _visible_dirs(self.image_root)
        for p in sorted(self.image_root.iterdir()):
            if not p.is_file():
                continue
            if p.name.startswith("."):
                self.report.hidden.append(p.name)
            elif is_image_file(p):
                self.report.loose_files.append(p.name)
            else:  # README, SOURCE.md, SYNTHETIC.md, MANIFEST.sha256, classes.txt ...
                self.report.metadata.append(p.name)
        if not class_dirs:
            raise BadInputError(
                f"{self.image_root}: no class sub-folders; expected {self.image_root}/<class>/<image>"
            )
        by_class: dict[str, list[Path]] = {}
        for d in class_dirs:
            images: list[Path] = []
            has_subdirs = False
            for p in sorted(d.iterdir()):
                rel = f"{d.name}/{p.name}"
                if p.name.startswith("."):
                    self.report.hidden.append(rel)
                elif is_image_file(p) and not _readable_file(p):
                    self.report.unreadable.append(rel)
                elif p.is_dir():
                    has_subdirs = True
                elif is_image_file(p):
                    images.append(p)
                else:
                    self.report.non_images.append(rel)
            if images:
                by_class[d.name] = images
            elif has_subdirs:
                self.report.nested_only_classes.append(d.name)
            else:
                self.report.empty_classes.append(d.name)
        if fixed is not None:
            missing = [c for c in fixed if c not in by_class]
            if missing:
                raise BadInputError(
                    f"{self.image_root}: class folder(s) {', '.join(missing)} missing or empty;"
                    " the split/model expects them"
                )
            names = list(fixed)
        else:
            names = sorted(by_class)
        if not names:
            raise BadInputError(
                f"{self.image_root}: no images found in any class folder;"
                f" expected {self.image_root}/<class>/<image>.jpg|png|tif|webp|bmp"
            )
        self.classes = names
        for label, name in enumerate(names):
            for p in by_class[name]:
                text = None
                if self.text_root is not None:
                    candidate = self.text_root / name / (p.stem + ".txt")
                    text = candidate if candidate.is_file() else None
                self.samples.append(Sample(p, f"{name}/{p.name}", label, name, text))

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}

    def counts(self) -> dict[str, int]:
        c = Counter(s.class_name for s in self.samples)
        return {name: c.get(name, 0) for name in self.classes}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Sample:
        return self.samples[i]

    def by_rel(self) -> dict[str, Sample]:
        return {s.rel: s for s in self.samples}

    def texts(self) -> dict[str, str]:
        """Captions of the paper layout (rel -> text); empty for the plain layout."""
        out: dict[str, str] = {}
        for s in self.samples:
            if s.text_path is not None:
                out[s.rel] = s.text_path.read_text(encoding="utf-8", errors="replace").strip()
        return out

    def __repr__(self) -> str:
        return (
            f"SceneFolder({str(self.root)!r}, layout={self.layout}, classes={len(self.classes)},"
            f" images={len(self.samples)})"
        )
