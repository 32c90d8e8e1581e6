"""Batch prediction over files and folders: decode, caption, classify, append, resume.

Why separate from the CLI: the loop (skip done paths, skip and report corrupt files, flush per batch) is
the part worth testing, and a notebook or a pipeline calls it without Typer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from skyfuse.captioning.matching import NameIndex
from skyfuse.data.images import is_image_file, load_image
from skyfuse.errors import BadInputError, ConfigError, ImageDecodeError
from skyfuse.inference.captions import GIVEN, NONE, CaptionRefused
from skyfuse.inference.predictor import Prediction
from skyfuse.inference.records import PredictionWriter


class SupportsPredict(Protocol):
    """What the batch loop needs: `Predictor` and the zero-shot adapter both fit (a None caption
    is made under the predictor's caption policy)."""

    def predict(
        self,
        images: Sequence[Image.Image],
        captions: Sequence[str | None] | None = None,
        top_k: int = 5,
    ) -> list[Prediction]: ...


@dataclass(frozen=True)
class InputImage:
    """One image to predict: `key` is what the record's `path` says (relative to a given folder)."""

    key: str
    path: Path


@dataclass
class PredictSummary:
    """What a run did; `failed` holds (key, reason) for files that were skipped (unreadable),
    `caption_failed` (key, reason) for images whose caption could not be made (a failed record in
    the file, retried by the next run); `image_only` counts predictions without a caption."""

    total: int = 0
    already_done: int = 0
    predicted: int = 0
    captioned: int = 0
    image_only: int = 0
    mismatched: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    caption_failed: list[tuple[str, str]] = field(default_factory=list)


def collect_inputs(paths: Iterable[str | Path]) -> list[InputImage]:
    """Image files from files and folders (folders recursively, sorted; hidden files skipped).

    A folder's images are keyed by their path relative to that folder (the caption-store key);
    single files by the path as given. The same file given twice counts once; two different files
    with the same key are refused, since one would silently stand for the other.
    """
    out: list[InputImage] = []
    seen: dict[str, Path] = {}
    for raw in paths:
        p = Path(raw).expanduser()
        if not p.exists():
            raise BadInputError(f"{p}: not found; give image files or a folder of images")
        if p.is_dir():
            found = sorted(
                f
                for f in p.rglob("*")
                if f.is_file()
                and is_image_file(f)
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
            items = [InputImage(f.relative_to(p).as_posix(), f) for f in found]
            if not items:
                raise BadInputError(
                    f"{p}: no image files (.jpg .png .tif .webp .bmp) in this folder"
                )
        else:
            items = [InputImage(str(raw), p)]
        for item in items:
            first = seen.get(item.key)
            if first is None:
                seen[item.key] = item.path
                out.append(item)
            elif first.resolve() != item.path.resolve():
                # the key is the record's identity (resume skips it): two files must not share one
                raise BadInputError(
                    f"{item.path}: has the same name ({item.key}) as {first}; predict these folders"
                    " in separate runs (separate --out files) or give their common parent folder"
                )
    return out


def lookup_caption(captions: Mapping[str, str], item: InputImage) -> str | None:
    """The caption for an input: by its key, by its path as given, then by ever shorter tails of the
    key (``image/Airport/a.jpg`` finds ``Airport/a.jpg`` of a paper-layout store, then ``a.jpg``)."""
    parts = item.key.split("/")
    for key in (item.key, str(item.path), *("/".join(parts[i:]) for i in range(1, len(parts)))):
        if key in captions:
            return captions[key]
    return None


class CaptionLookup:
    """Find each input's caption in a caption set, built once per run.

    Why beyond `lookup_caption`: a plain folder of images (``beach_1.jpg``) must still find the
    ``Beach/beach_1.jpg`` caption of a store made on the scene folder, so the last resort is the
    name matching every other caption consumer uses (``<class>/<stem>``, file name, stem; ambiguous
    names never match).
    """

    def __init__(self, captions: Mapping[str, str]) -> None:
        self.captions = captions
        self._index: NameIndex | None = None

    def __call__(self, item: InputImage) -> str | None:
        hit = lookup_caption(self.captions, item)
        if hit is not None:
            return hit
        if self._index is None:
            self._index = NameIndex(self.captions)
        name = self._index.lookup(item.key)
        return None if name is None else self.captions[name]


@dataclass
class CaptionPlan:
    """What a batch run will do about captions: how many images need one made, whether the given
    captions are of another kind than the training ones, and a line saying so."""

    missing: int
    given_mismatch: bool
    note: str


def plan_captions(
    predictor: Any,
    items: Sequence[InputImage],
    captions: Mapping[str, str] | None,
    caption_file: str | Path | None = None,
    *,
    allow_mismatch: bool = False,
) -> CaptionPlan:
    """Check before anything is written that every image will get a caption of the right kind.

    Raises CaptionRefused when images lack a caption and the predictor's caption policy cannot make
    one (a human-caption model), and ConfigError when `caption_file` is a caption store of another
    captioner than the training captions' (unless `allow_mismatch`).
    """
    from skyfuse.captioning.provenance import same_kind, source_of_file

    policy = predictor.caption_policy
    find = CaptionLookup(captions) if captions is not None else None
    missing = sum(1 for it in items if find is None or find(it) is None)
    if missing and policy.mode == "refuse":
        raise CaptionRefused(f"{missing} of {len(items)} images have no caption: {policy.refusal}")
    given_mismatch = False
    notes = [policy.describe()] if missing or policy.trained.kind == "unknown" else []
    if caption_file is not None and missing < len(items):
        used = source_of_file(caption_file)
        known = policy.trained.kind != "unknown" and used.kind in ("captioner", "mixed")
        given_mismatch = known and not same_kind(policy.trained, used)
        if given_mismatch and not allow_mismatch:
            raise ConfigError(
                f"{caption_file}: captions from {used.describe()}, but the model was trained on"
                f" {policy.trained.describe()}; give captions of that kind, or add"
                " --allow-caption-mismatch (records say caption_mismatch: true)"
            )
        if missing:
            notes.append(f"{missing} of {len(items)} images have no caption in {caption_file}")
    return CaptionPlan(missing, given_mismatch, "; ".join(notes))


def predict_files(
    predictor: SupportsPredict,
    items: Sequence[InputImage],
    writer: PredictionWriter,
    *,
    captions: Mapping[str, str] | None = None,
    top_k: int = 5,
    batch_size: int = 16,
    max_pixels: int | None = None,
    given_mismatch: bool = False,
    on_progress: Callable[[int, PredictSummary], None] | None = None,
) -> PredictSummary:
    """Predict every item not yet in `writer`; corrupt files are skipped and listed in the summary.

    Images without a caption in `captions` (or all, when `captions` is None) get one under the
    predictor's caption policy; a caption that fails is a failed record (`error`), never an empty
    caption. `given_mismatch` marks the given captions as of another kind than the training ones
    (the caller compared their source). `on_progress(n, summary)` is called after each batch.
    """
    summary = PredictSummary(total=len(items))
    todo = [it for it in items if it.key not in writer.done]
    summary.already_done = len(items) - len(todo)
    step = max(1, int(batch_size))
    kw: dict[str, Any] = {} if max_pixels is None else {"max_pixels": max_pixels}
    find = CaptionLookup(captions) if captions is not None else None
    for start in range(0, len(todo), step):
        chunk = todo[start : start + step]
        ok: list[InputImage] = []
        images: list[Image.Image] = []
        for it in chunk:
            try:
                images.append(load_image(it.path, **kw))
                ok.append(it)
            except ImageDecodeError as exc:
                summary.failed.append((it.key, exc.reason))
        if images:
            caps: list[str | None] = [find(it) if find is not None else None for it in ok]
            preds = predictor.predict(images, caps, top_k)
            for it, pred in zip(ok, preds, strict=True):
                if pred.caption_source == GIVEN and given_mismatch:
                    pred.caption_mismatch = True
                writer.write(it.key, pred)
                if pred.error is not None:
                    summary.caption_failed.append((it.key, pred.error))
                    continue
                summary.predicted += 1
                summary.image_only += pred.caption_source == NONE
                summary.captioned += pred.caption_source not in (GIVEN, NONE)
                summary.mismatched += pred.caption_mismatch
            writer.flush()
        if on_progress is not None:
            on_progress(len(chunk), summary)
    return summary
