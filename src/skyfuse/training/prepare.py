"""Inputs of a run: the scene folder, its split, the captions and the (cached) token features.

Why separate from training: features are by far the slowest part on a CPU, so `skyfuse bench` prepares
them once and reuses them for every model and seed; the split and captions are checked here so that a
bad input fails before any compute is spent.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skyfuse.data.folder import SceneFolder
from skyfuse.errors import BadInputError, ConfigError

DEFAULT_IMAGE_ENCODER = "efficientnet-lite0"
DEFAULT_TEXT_ENCODER = "minilm"


@dataclass
class Captions:
    """Captions keyed by image rel path, with the prompt id when the source records one."""

    texts: dict[str, str]
    source: str
    prompt_id: str | None = None
    #: where the captions came from (`skyfuse.captioning.provenance.CaptionSource.to_dict`); bundles
    #: record it so that prediction uses captions of the same kind
    provenance: dict[str, Any] | None = None


def open_folder(path: Path, classes: list[str] | None = None) -> SceneFolder:
    """The scene folder at ``path`` (plain or paper layout); a fixed class list when given."""
    return SceneFolder(Path(path), classes=classes)


def resolve_split(
    folder: SceneFolder,
    *,
    split_file: Path | None = None,
    protocol: str | None = None,
    train_ratio: float | None = None,
    val: float = 0.1,
    seed: int = 0,
) -> Any:
    """A saved split (verified against the folder) or a new seeded one from a protocol or ratio."""
    from skyfuse.data.splits import Split, make_split

    if split_file is not None:
        if protocol is not None or train_ratio is not None:
            raise ConfigError("give either --split FILE or --protocol/--train, not both")
        split = Split.load(split_file)
        split.verify(folder)
        return split
    if protocol is None and train_ratio is None:
        raise ConfigError(
            "no split given: pass --protocol NAME (e.g. aid-20), --train RATIO or --split FILE"
        )
    return make_split(folder, protocol=protocol, train=train_ratio, val=val, seed=seed)


def _prompt_id_of(source: Path) -> str | None:
    """The prompt id recorded in a caption store (None for other formats or mixed prompts)."""
    if not source.is_file() or source.suffix.lower() != ".jsonl":
        return None
    ids: set[str] = set()
    with source.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and rec.get("prompt_id"):
                ids.add(str(rec["prompt_id"]))
            if len(ids) > 1:
                return "mixed"
    return ids.pop() if ids else None


def resolve_captions(folder: SceneFolder, source: Path | None) -> Captions:
    """Captions from a file/folder (any format `load_captions` reads), or the paper layout's text/."""
    if source is None:
        texts = folder.texts()
        if not texts:
            raise BadInputError(
                f"{folder.root}: no captions; pass --captions FILE (a caption store from `skyfuse caption`,"
                " a JSONL/CSV of path,caption or a text/ tree)"
            )
        where = folder.text_root
        return Captions(texts, str(where), provenance=_provenance(where) if where else None)
    from skyfuse.captioning import load_captions

    source = Path(source).expanduser()
    if not source.exists():
        raise BadInputError(f"{source}: caption source not found; check the --captions path")
    texts = load_captions(source, dataset_root=folder.root)
    if not texts:
        raise BadInputError(
            f"{source}: no caption matches an image of {folder.root}; the names must match the images"
        )
    return Captions(texts, str(source), _prompt_id_of(source), _provenance(source))


def _provenance(source: Path) -> dict[str, Any]:
    from skyfuse.captioning.provenance import source_of_file

    return source_of_file(source).to_dict()


def check_coverage(captions: Mapping[str, str], rels: list[str], source: str) -> None:
    """Every image that will be used must have a caption (a silent empty text would skew results)."""
    missing = [r for r in rels if not str(captions.get(r) or "").strip()]
    if missing:
        raise BadInputError(
            f"{source}: {len(missing)} of {len(rels)} images have no caption (e.g. {missing[0]});"
            " caption them (`skyfuse caption`) or drop them from the folder"
        )


def restrict_split(split: Any, available: set[str]) -> tuple[Any, list[str]]:
    """The split without images that have no features (undecodable, no caption), and what was dropped.

    Why not fail: one corrupt JPEG should not stop a benchmark; the dropped paths are reported and
    recorded in ``metrics.json`` so that the counts stay honest.
    """
    dropped = [
        r for part in (split.train, split.val, split.test) for r in part if r not in available
    ]
    if not dropped:
        return split, []
    keep = {
        name: [r for r in getattr(split, name) if r in available]
        for name in ("train", "val", "test")
    }
    for name in ("train", "test"):
        if not keep[name]:
            raise BadInputError(
                f"no {name} image of the split has features ({len(dropped)} dropped, e.g. {dropped[0]});"
                " check the captions and images"
            )
    return dataclasses.replace(split, **keep), dropped


def extract(
    folder: SceneFolder,
    captions: Mapping[str, str],
    *,
    image_encoder: str = DEFAULT_IMAGE_ENCODER,
    text_encoder: str = DEFAULT_TEXT_ENCODER,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    batch_size: int = 32,
    device: str = "auto",
    show_progress: bool = True,
    encoders: tuple[Any, Any] | None = None,
    views: int = 1,
) -> Any:
    """Token features of every image of ``folder`` with a caption, through the feature cache
    (default ``$SKYFUSE_CACHE_DIR`` or ``~/.cache/skyfuse/features``). Images without a caption or
    that do not decode are left out and listed in ``FeatureSet.skipped``. ``views`` > 1 also encodes
    that many dihedral views of every image (`skyfuse.encoders.views`), each cached under its own id."""
    import torch

    from skyfuse.encoders import create_image_encoder, create_text_encoder
    from skyfuse.encoders.cache import default_cache_dir
    from skyfuse.encoders.features import extract_features

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if encoders is not None:  # already built (fine-tuned ones: trainable encoders skip the cache)
        img, txt = encoders
    else:
        img = create_image_encoder(image_encoder)
        txt = create_text_encoder(text_encoder)
    root = (cache_dir or default_cache_dir()) if use_cache else None
    if views > 1:
        from skyfuse.encoders.views import extract_views

        return extract_views(
            folder.samples,
            captions,
            img,
            txt,
            views=views,
            cache_dir=root,
            batch_size=batch_size,
            device=device,
            show_progress=show_progress,
        )
    return extract_features(
        folder.samples,
        captions,
        img,
        txt,
        cache_dir=root,
        batch_size=batch_size,
        device=device,
        show_progress=show_progress,
    )
