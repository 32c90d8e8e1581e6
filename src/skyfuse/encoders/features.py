"""Frozen feature extraction: samples + captions -> a `FeatureSet`, through the on-disk cache.

Why: frozen-encoder training reads the same tokens every epoch and every seed; computing them once
(images keyed by the sha256 of their bytes, captions by the sha256 of their text) turns a run into
minutes on a CPU. Only what is missing is computed: change a caption and only its text features are
recomputed; change the encoder and its new id selects a fresh cache folder.

Speed: images are read, decoded and preprocessed in a small thread pool (PIL and torch release the
GIL) one or two batches ahead of the encoder, which runs under `torch.inference_mode`; captions are
encoded in length-sorted batches to minimise padding. Corrupt or unreadable images and samples without
a caption are skipped and listed in `FeatureSet.skipped` (rel -> reason), never fatal.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from skyfuse.data.images import decode_image, sha256_bytes
from skyfuse.encoders.base import ImageEncoder, TextEncoder, TokenBatch
from skyfuse.encoders.cache import Entry, FeatureCache, text_key
from skyfuse.errors import BadInputError, ImageDecodeError
from skyfuse.progress import ProgressReporter, resolve_progress

log = logging.getLogger(__name__)

FLUSH_EVERY = 512  # entries per cache shard: bounds what a kill can lose


class SampleLike(Protocol):
    @property
    def path(self) -> Path: ...
    @property
    def rel(self) -> str: ...


@dataclass
class FeatureSet:
    """Token features of a set of images and their captions, row-aligned with `rels`.

    Tokens are fp16, padded to the longest sequence in the set; masks are True for real tokens;
    pooled vectors are fp32. `skipped` maps rel -> reason for samples left out (corrupt image,
    missing caption); `stats` counts distinct images / captions reused from the cache or computed, and
    captions cut at the text encoder's max_length (`text_truncated`).
    """

    rels: list[str]
    image_tokens: torch.Tensor
    image_mask: torch.Tensor
    image_pooled: torch.Tensor
    text_tokens: torch.Tensor
    text_mask: torch.Tensor
    text_pooled: torch.Tensor
    image_encoder_id: str
    text_encoder_id: str
    skipped: dict[str, str] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)
    image_views: Any = (
        None  # `skyfuse.encoders.views.ViewTokens` when dihedral views were extracted
    )

    def __len__(self) -> int:
        return len(self.rels)

    def index_of(self, rels: Sequence[str]) -> list[int]:
        pos = {r: i for i, r in enumerate(self.rels)}
        missing = [r for r in rels if r not in pos]
        if missing:
            raise BadInputError(
                f"{len(missing)} image(s) not in the feature set, e.g. {missing[0]};"
                " extract features for them first (or they were skipped as unreadable)"
            )
        return [pos[r] for r in rels]

    def subset(self, rels: Sequence[str]) -> FeatureSet:
        """Rows for `rels`, in that order; padding is trimmed to the longest remaining sequence."""
        idx = torch.tensor(self.index_of(rels), dtype=torch.long)
        im_mask, tx_mask = self.image_mask[idx], self.text_mask[idx]
        n = _width(im_mask)
        length = _width(tx_mask)
        return FeatureSet(
            rels=list(rels),
            image_tokens=self.image_tokens[idx, :n],
            image_mask=im_mask[:, :n],
            image_pooled=self.image_pooled[idx],
            text_tokens=self.text_tokens[idx, :length],
            text_mask=tx_mask[:, :length],
            text_pooled=self.text_pooled[idx],
            image_encoder_id=self.image_encoder_id,
            text_encoder_id=self.text_encoder_id,
            skipped=dict(self.skipped),
            stats=dict(self.stats),
            image_views=self.image_views.subset(idx, n) if self.image_views is not None else None,
        )


def _width(mask: torch.Tensor) -> int:
    """Number of leading columns that hold at least one real token (at least 1 when any exist)."""
    if mask.shape[0] == 0:
        return int(mask.shape[1])
    cols = mask.any(0).nonzero()
    return int(cols.max()) + 1 if len(cols) else 1


# -- helpers shared with the multi-device path ----------------------------------------------------
def compact(batch: TokenBatch) -> list[Entry]:
    """Per-row (real tokens fp16, pooled fp32) on the CPU: what the cache stores."""
    tokens = batch.tokens.detach().float().cpu()
    mask = batch.mask.detach().cpu()
    pooled = batch.pooled.detach().float().cpu()
    return [(tokens[i][mask[i]].half(), pooled[i]) for i in range(tokens.shape[0])]


def hash_images(
    samples: Sequence[SampleLike], workers: int = 4
) -> tuple[dict[str, str], dict[str, str]]:
    """(rel -> sha256 of the file bytes, rel -> reason for unreadable files)."""

    def one(s: SampleLike) -> tuple[str, str | None, str | None]:
        try:
            return s.rel, sha256_bytes(Path(s.path).read_bytes()), None
        except OSError as exc:
            return s.rel, None, f"{s.path}: cannot read ({exc.strerror or exc})"

    shas: dict[str, str] = {}
    bad: dict[str, str] = {}
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for rel, sha, why in pool.map(one, samples):
            if sha is None:
                bad[rel] = why or "unreadable"
            else:
                shas[rel] = sha
    return shas, bad


def load_pixels(
    items: Sequence[tuple[str, Path]], encoder: ImageEncoder
) -> tuple[list[str], torch.Tensor | None, dict[str, str]]:
    """Decode + preprocess one batch: (keys that worked, pixels, key -> failure reason).

    A key is the sha256 of the file as hashed earlier; a file whose bytes no longer match was
    changed meanwhile and is reported rather than cached under a key that is no longer its own.
    """
    keys, images, failed = [], [], {}
    for key, path in items:
        try:
            data = Path(path).read_bytes()
            if sha256_bytes(data) != key:
                failed[key] = f"{path}: changed while features were extracted; run again"
                continue
            images.append(decode_image(data, path))
            keys.append(key)
        except ImageDecodeError as exc:
            failed[key] = str(exc)
        except OSError as exc:
            failed[key] = f"{path}: cannot read ({exc.strerror or exc})"
    pixels = encoder.preprocess(images) if images else None
    return keys, pixels, failed


def _prefetch(
    fn: Callable[[Any], Any], jobs: Sequence[Any], workers: int, depth: int = 2
) -> Iterator[Any]:
    """Run fn over jobs in a thread pool, at most `depth` results ahead, yielding in order."""
    if workers <= 0:
        for job in jobs:
            yield fn(job)
        return
    with ThreadPoolExecutor(workers) as pool:
        queue: deque[Future[Any]] = deque()
        it = iter(jobs)
        for job in it:
            queue.append(pool.submit(fn, job))
            if len(queue) >= depth:
                break
        while queue:
            result = queue.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                queue.append(pool.submit(fn, nxt))
            yield result


def _chunks(seq: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [seq[i : i + size] for i in range(0, len(seq), size)]


def _use_cache(cache_dir: Path | None, *encoders: Any) -> bool:
    if cache_dir is None:
        return False
    for enc in encoders:
        if not getattr(enc, "weights_loaded", True):
            continue  # lazily loaded weights are frozen ones, and asking for parameters loads them
        params = enc.parameters() if hasattr(enc, "parameters") else []
        if any(p.requires_grad for p in params):
            log.warning(
                "%s is trainable: its outputs change with training, cache not used", enc.encoder_id
            )
            return False
    return True


class _Progress:
    """The caller's progress reporter (`show_progress`: a reporter, True = the default, False = none)."""

    def __init__(self, show: bool | ProgressReporter) -> None:
        self.bar = resolve_progress(show)

    def __enter__(self) -> _Progress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)

    def task(self, name: str, total: int) -> Any:
        return self.bar.add_task(name, total=total)

    def advance(self, task: Any, n: int) -> None:
        if n:
            self.bar.advance(task, n)


# -- the two stages --------------------------------------------------------------------------------
def _image_entries(
    todo: Sequence[tuple[str, Path]],
    encoder: ImageEncoder,
    cache: FeatureCache | None,
    *,
    batch_size: int,
    device: str,
    workers: int,
    bar: _Progress,
    task: Any,
) -> tuple[dict[str, Entry], dict[str, str]]:
    done: dict[str, Entry] = {}
    failed: dict[str, str] = {}
    pending: dict[str, Entry] = {}
    fn = lambda items: load_pixels(items, encoder)  # noqa: E731
    for keys, pixels, bad in _prefetch(fn, _chunks(todo, batch_size), workers):
        failed.update(bad)
        if pixels is not None:
            with torch.inference_mode():
                entries = compact(encoder.encode(pixels.to(device)))
            pending.update(zip(keys, entries, strict=True))
        if cache is not None and len(pending) >= FLUSH_EVERY:
            cache.put(pending)
            done.update(pending)
            pending = {}
        bar.advance(task, len(keys) + len(bad))
    if cache is not None:
        cache.put(pending)
    done.update(pending)
    return done, failed


def _text_entries(
    todo: Sequence[tuple[str, str]],
    encoder: TextEncoder,
    cache: FeatureCache | None,
    *,
    batch_size: int,
    device: str,
    bar: _Progress,
    task: Any,
) -> tuple[dict[str, Entry], dict[str, int]]:
    """(key -> entry, key -> untruncated token count of the captions that filled max_length)."""
    done: dict[str, Entry] = {}
    pending: dict[str, Entry] = {}
    lengths: dict[str, int] = {}
    measure = getattr(encoder, "token_lengths", None)
    limit = int(getattr(encoder, "max_length", 0) or 0)
    ordered = sorted(todo, key=lambda kv: len(kv[1]))
    for chunk in _chunks(ordered, batch_size):
        keys = [k for k, _ in chunk]
        with torch.inference_mode():
            batch = encoder.tokenize([t for _, t in chunk])
            entries = compact(encoder.encode({k: v.to(device) for k, v in batch.items()}))
        pending.update(zip(keys, entries, strict=True))
        full = [i for i, (tokens, _) in enumerate(entries) if limit and tokens.shape[0] >= limit]
        if measure is not None and full:
            counts = measure([chunk[i][1] for i in full])
            lengths.update({keys[i]: int(n) for i, n in zip(full, counts, strict=True)})
        if cache is not None and len(pending) >= FLUSH_EVERY:
            cache.put(pending, lengths=lengths)
            done.update(pending)
            pending = {}
        bar.advance(task, len(keys))
    if cache is not None:
        cache.put(pending, lengths=lengths)
    done.update(pending)
    return done, lengths


def _count_truncated(
    texts: Mapping[str, str],
    entries: Mapping[str, Entry],
    known: Mapping[str, int],
    encoder: Any,
) -> int:
    """Captions cut at the encoder's max_length.

    Only a caption whose stored tokens fill max_length can have been cut; its full length comes
    from the cache metadata or this run, and only unknown ones (older shards) are tokenised, so a
    fully cached run does not load the tokenizer.
    """
    limit = int(encoder.max_length)
    full = [k for k in texts if entries[k][0].shape[0] >= limit]
    cut = sum(known[k] > limit for k in full if k in known)
    unknown = [texts[k] for k in full if k not in known]
    return cut + (int(encoder.count_truncated(unknown)) if unknown else 0)


def _stack(entries: Sequence[Entry], dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad variable-length token entries into (M, N, D) fp16 tokens, (M, N) mask, (M, D) pooled."""
    m = len(entries)
    n = max([1, *(t.shape[0] for t, _ in entries)])
    tokens = torch.zeros(m, n, dim, dtype=torch.float16)
    mask = torch.zeros(m, n, dtype=torch.bool)
    for i, (t, _) in enumerate(entries):
        tokens[i, : t.shape[0]] = t
        mask[i, : t.shape[0]] = True
    pooled = torch.stack([p.float() for _, p in entries]) if m else torch.zeros(0, dim)
    return tokens, mask, pooled


def extract_features(
    samples: Sequence[SampleLike],
    captions: Mapping[str, str],
    image_encoder: ImageEncoder,
    text_encoder: TextEncoder,
    *,
    cache_dir: Path | None,
    batch_size: int = 32,
    device: str = "cpu",
    show_progress: bool | ProgressReporter = True,
    workers: int = 2,
) -> FeatureSet:
    """Image and caption tokens for `samples` (rel -> caption in `captions`), cached under `cache_dir`.

    Encoders are moved to `device`. Samples whose image cannot be decoded or that have no caption are
    left out and listed in `FeatureSet.skipped`. Trainable encoders bypass the cache.
    """
    if batch_size < 1:
        raise BadInputError(f"batch_size must be >= 1, got {batch_size}")
    for enc in (image_encoder, text_encoder):
        if hasattr(enc, "to"):
            enc.to(device)  # type: ignore[attr-defined]
    skipped: dict[str, str] = {}
    with_caption = []
    for s in samples:
        if s.rel in captions and captions[s.rel] is not None:
            with_caption.append(s)
        else:
            skipped[s.rel] = "no caption; caption it (skyfuse caption) or fix the captions file"
    if samples and not with_caption:
        raise BadInputError(
            f"none of the {len(samples)} images has a caption (e.g. {samples[0].rel});"
            " check that the captions file uses paths relative to the dataset root (Class/file.jpg)"
        )
    shas, unreadable = hash_images(with_caption, workers=max(1, 2 * workers))
    skipped.update(unreadable)
    use_cache = _use_cache(cache_dir, image_encoder, text_encoder)
    icache = (
        FeatureCache(cache_dir, image_encoder.encoder_id, "image", dim=image_encoder.dim)
        if use_cache and cache_dir
        else None
    )
    tcache = (
        FeatureCache(cache_dir, text_encoder.encoder_id, "text", dim=text_encoder.dim)
        if use_cache and cache_dir
        else None
    )
    live = [s for s in with_caption if s.rel in shas]
    tkeys = {s.rel: text_key(str(captions[s.rel])) for s in live}

    with _Progress(show_progress) as bar:
        # images: cached hits, then the rest (one decode per distinct file content)
        image_entries: dict[str, Entry] = icache.get(shas[s.rel] for s in live) if icache else {}
        first_path: dict[str, Path] = {}
        for s in live:
            first_path.setdefault(shas[s.rel], Path(s.path))
        todo = [(k, p) for k, p in first_path.items() if k not in image_entries]
        itask = bar.task("image features", len(first_path))
        bar.advance(itask, len(first_path) - len(todo))
        stats = {"image_cached": len(first_path) - len(todo), "image_computed": 0}
        computed, failed = _image_entries(
            todo,
            image_encoder,
            icache,
            batch_size=batch_size,
            device=device,
            workers=workers,
            bar=bar,
            task=itask,
        )
        image_entries.update(computed)
        stats["image_computed"] = len(computed)
        for s in live:
            if shas[s.rel] in failed:
                skipped[s.rel] = failed[shas[s.rel]]
        live = [s for s in live if shas[s.rel] in image_entries]

        # captions
        texts = {tkeys[s.rel]: str(captions[s.rel]) for s in live}
        text_entries: dict[str, Entry] = tcache.get(texts) if tcache else {}
        ttodo = [(k, t) for k, t in texts.items() if k not in text_entries]
        ttask = bar.task("text features", len(texts))
        bar.advance(ttask, len(texts) - len(ttodo))
        stats.update(text_cached=len(texts) - len(ttodo), text_computed=len(ttodo))
        computed_text, lengths = _text_entries(
            ttodo,
            text_encoder,
            tcache,
            batch_size=batch_size,
            device=device,
            bar=bar,
            task=ttask,
        )
        text_entries.update(computed_text)
        if texts and hasattr(text_encoder, "count_truncated"):
            known = {**(tcache.token_lengths() if tcache else {}), **lengths}
            cut = _count_truncated(texts, text_entries, known, text_encoder)
            stats["text_truncated"] = cut
            if cut:
                log.info(
                    "%d caption(s) longer than %d tokens were truncated",
                    cut,
                    text_encoder.max_length,
                )

    if skipped:
        rel, why = next(iter(skipped.items()))
        log.warning(
            "%d image(s) skipped (FeatureSet.skipped lists them), e.g. %s: %s",
            len(skipped),
            rel,
            why,
        )
    it, im, ip = _stack([image_entries[shas[s.rel]] for s in live], image_encoder.dim)
    tt, tm, tp = _stack([text_entries[tkeys[s.rel]] for s in live], text_encoder.dim)
    return FeatureSet(
        rels=[s.rel for s in live],
        image_tokens=it,
        image_mask=im,
        image_pooled=ip,
        text_tokens=tt,
        text_mask=tm,
        text_pooled=tp,
        image_encoder_id=image_encoder.encoder_id,
        text_encoder_id=text_encoder.encoder_id,
        skipped=skipped,
        stats=stats,
    )


@dataclass(frozen=True)
class FeatureJob:
    """What `skyfuse features` fills: the cache for a scene folder's images and captions.

    `captions` defaults to the folder's own text/ tree (paper layout). `devices` (a count or
    "auto") spreads the work over Lightning's predict loop instead of one `device`.
    """

    path: Path
    captions: Path | None = None
    image_encoder: str = "efficientnet-lite0"
    text_encoder: str = "minilm"
    cache_dir: Path | None = None
    batch_size: int = 32
    device: str = "auto"
    devices: str | None = None
    workers: int = 2
    max_length: int | None = None


@dataclass
class FeatureJobResult:
    """The features, how many images the folder holds, the cache used and the text token limit."""

    features: FeatureSet
    images: int
    cache_dir: Path
    text_max_length: int


def _job_captions(job: FeatureJob, folder: Any) -> dict[str, str]:
    from skyfuse.captioning import load_captions

    captions = job.captions
    if captions is None:
        if folder.layout != "paper" or folder.text_root is None:
            raise BadInputError(
                f"{job.path}: no captions given and no text/ folder; pass --captions FILE"
                " (e.g. the store written by `skyfuse caption`)"
            )
        captions = folder.text_root
    return load_captions(captions, folder.root)


def _job_device(job: FeatureJob) -> str:
    """The single device, checked before any weights load ("auto": cuda when there is one)."""
    from skyfuse.devices import check_device

    device = job.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return str(check_device(device))


def run_feature_job(job: FeatureJob) -> FeatureJobResult:
    """Encode what the cache lacks; corrupt images and images without a caption are skipped."""
    from skyfuse.data.folder import SceneFolder
    from skyfuse.encoders import create_image_encoder, create_text_encoder
    from skyfuse.encoders.cache import default_cache_dir

    folder = SceneFolder(job.path)
    caps = _job_captions(job, folder)
    root = job.cache_dir if job.cache_dir is not None else default_cache_dir()
    device = _job_device(job) if job.devices is None else job.device
    ie = create_image_encoder(job.image_encoder)
    te_kw = {"max_length": job.max_length} if job.max_length is not None else {}
    te = create_text_encoder(job.text_encoder, **te_kw)
    if job.devices is not None:
        from skyfuse.encoders.distributed import extract_features_distributed

        n: int | str = int(job.devices) if job.devices.isdigit() else job.devices
        fs = extract_features_distributed(
            folder.samples,
            caps,
            ie,
            te,
            cache_dir=root,
            batch_size=job.batch_size,
            devices=n,
            num_workers=job.workers,
        )
    else:
        fs = extract_features(
            folder.samples,
            caps,
            ie,
            te,
            cache_dir=root,
            batch_size=job.batch_size,
            device=device,
            workers=job.workers,
        )
    return FeatureJobResult(fs, len(folder), root, te.max_length)
