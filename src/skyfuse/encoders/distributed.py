"""Feature extraction on several devices through Lightning's predict loop.

Each device rank encodes its share of the missing images and captions and writes its own cache shards
(the cache is the only channel between ranks, so there is nothing to gather); afterwards every rank
assembles the `FeatureSet` from the now complete cache with `extract_features`, which only reads.
Decoding runs in DataLoader worker processes. On a CPU it works with ``devices=1``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from skyfuse.data.images import decode_image, sha256_bytes
from skyfuse.data.transforms import preprocess_image
from skyfuse.encoders.base import ImageEncoder, ImagePreprocess, TextEncoder
from skyfuse.encoders.cache import FeatureCache, text_key
from skyfuse.encoders.features import FeatureSet, SampleLike, compact, extract_features, hash_images
from skyfuse.errors import ImageDecodeError


class _ImageItems(Dataset[tuple[str, torch.Tensor | None]]):
    def __init__(self, items: Sequence[tuple[str, Path]], cfg: ImagePreprocess) -> None:
        self.items, self.cfg = list(items), cfg

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[str, torch.Tensor | None]:
        key, path = self.items[i]
        try:
            data = Path(path).read_bytes()
            if sha256_bytes(data) != key:  # changed since it was hashed: not cached under this key
                return key, None
            return key, preprocess_image(decode_image(data, path), self.cfg)
        except (ImageDecodeError, OSError):
            return key, None  # reported by the assembling pass, which retries it


def _collate_images(rows: list[tuple[str, torch.Tensor | None]]) -> tuple[list[str], torch.Tensor]:
    ok = [(k, x) for k, x in rows if x is not None]
    if not ok:
        return [], torch.empty(0)
    return [k for k, _ in ok], torch.stack([x for _, x in ok])


def _encode_module(encoder: Any, cache: FeatureCache) -> Any:
    import lightning as L

    class EncodeToCache(L.LightningModule):
        """predict_step = encode a batch and write it to this rank's cache shard."""

        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def predict_step(self, batch: Any, batch_idx: int) -> None:
            keys, inputs = batch
            if not keys:
                return None
            out = self.encoder.encode(inputs)
            cache.put(dict(zip(keys, compact(out), strict=True)))
            return None

    return EncodeToCache()


def extract_features_distributed(
    samples: Sequence[SampleLike],
    captions: Mapping[str, str],
    image_encoder: ImageEncoder,
    text_encoder: TextEncoder,
    *,
    cache_dir: Path | None,
    batch_size: int = 32,
    devices: int | str = 1,
    accelerator: str = "auto",
    strategy: str = "auto",
    num_workers: int = 2,
    show_progress: bool = True,
) -> FeatureSet:
    """Like `extract_features`, with the encoding spread over `devices` by a Lightning Trainer."""
    import lightning as L

    tmp = None
    if cache_dir is None:
        tmp = Path(tempfile.mkdtemp(prefix="skyfuse-features-"))
    root = cache_dir if cache_dir is not None else tmp
    assert root is not None
    try:
        live = [s for s in samples if captions.get(s.rel) is not None]
        shas, _ = hash_images(live)
        icache = FeatureCache(root, image_encoder.encoder_id, "image", dim=image_encoder.dim)
        tcache = FeatureCache(root, text_encoder.encoder_id, "text", dim=text_encoder.dim)
        paths: dict[str, Path] = {}
        for s in live:
            if s.rel in shas:
                paths.setdefault(shas[s.rel], Path(s.path))
        todo = [(k, paths[k]) for k in icache.missing(paths)]
        texts = {text_key(str(captions[s.rel])): str(captions[s.rel]) for s in live}
        ttodo = sorted(((k, texts[k]) for k in tcache.missing(texts)), key=lambda kv: len(kv[1]))

        trainer = L.Trainer(
            accelerator=accelerator,
            devices=devices,
            strategy=strategy,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=show_progress,
        )
        if todo:
            loader = DataLoader(
                _ImageItems(todo, image_encoder.preprocess_cfg),
                batch_size=batch_size,
                num_workers=num_workers,
                collate_fn=_collate_images,
            )
            trainer.predict(_encode_module(image_encoder, icache), loader, return_predictions=False)
        if ttodo:

            def collate_texts(
                rows: list[tuple[str, str]],
            ) -> tuple[list[str], dict[str, torch.Tensor]]:
                return [k for k, _ in rows], text_encoder.tokenize([t for _, t in rows])

            tloader: DataLoader[Any] = DataLoader(
                ttodo,  # type: ignore[arg-type]
                batch_size=batch_size,
                collate_fn=collate_texts,
            )
            trainer.predict(_encode_module(text_encoder, tcache), tloader, return_predictions=False)
        fs = extract_features(
            samples,
            captions,
            image_encoder,
            text_encoder,
            cache_dir=root,
            batch_size=batch_size,
            device="cpu",
            show_progress=False,
        )
        hits, thits = len(paths) - len(todo), len(texts) - len(ttodo)
        fs.stats = {
            "image_cached": hits,
            "image_computed": fs.stats.get("image_cached", 0) - hits,
            "text_cached": thits,
            "text_computed": fs.stats.get("text_cached", 0) - thits,
            "text_truncated": fs.stats.get("text_truncated", 0),
        }
        return fs
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
