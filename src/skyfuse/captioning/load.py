"""`load_captions`: one call that turns any caption source into ``{image rel path: caption}``."""

from __future__ import annotations

from pathlib import Path

from skyfuse.captioning.matching import NameIndex
from skyfuse.captioning.sources import Raw, join_sentences, read_source

#: Formats whose single entries are VLM/user captions kept verbatim (human sets are always joined).
VERBATIM_FORMATS = frozenset({"store", "jsonl", "csv", "text-tree"})


def finalize(raw: Raw, fmt: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, sentences in raw.items():
        if len(sentences) == 1 and fmt in VERBATIM_FORMATS:
            text = sentences[0].strip()
        else:
            text = join_sentences(sentences)
        if text:
            out[name.replace("\\", "/")] = text
    return out


def _implied_dataset_root(source: Path, fmt: str) -> Path | None:
    """A paper-layout root is implied when the source is it, or is its text/ folder."""
    if fmt != "text-tree":
        return None
    for root in (source, source.parent):
        if (root / "image").is_dir() and (root / "text").is_dir():
            return root
    return None


def match_to_dataset(captions: dict[str, str], dataset_root: Path) -> dict[str, str]:
    """Re-key captions to the dataset's image paths (``Class/file.ext``); unmatched names drop out."""
    from skyfuse.data.folder import SceneFolder

    folder = SceneFolder(dataset_root)
    index = NameIndex(captions)
    out: dict[str, str] = {}
    for s in folder.samples:
        name = index.lookup(s.rel)
        if name is not None:
            out[s.rel] = captions[name]
    return out


def load_captions(source: Path, dataset_root: Path | None = None) -> dict[str, str]:
    """Read captions from a store JSONL, a JSONL/CSV of path,caption, a paper ``text/`` tree, a
    paper-layout dataset root, human caption sets (``*_caps.txt``, Karpathy JSON) and return
    ``{rel path: caption}``.

    With `dataset_root` (or when the source is a paper-layout root or its ``text/`` folder) the keys
    are that dataset's image paths relative to its image root, e.g. ``Airport/airport_1.jpg``;
    otherwise they are the names the source uses. Several sentences per image are joined by
    `sources.join_sentences`.
    """
    source = Path(source).expanduser()
    raw, fmt = read_source(source)
    captions = finalize(raw, fmt)
    root = Path(dataset_root) if dataset_root is not None else _implied_dataset_root(source, fmt)
    if root is None:
        return dict(sorted(captions.items()))
    return match_to_dataset(captions, root)
