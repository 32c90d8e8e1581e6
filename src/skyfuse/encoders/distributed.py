"""Feature extraction on several devices through Lightning's predict loop.

Each device rank encodes its share of the missing images and captions and writes its own cache shards
(the cache is the only channel between ranks, so there is nothing to gather); after a barrier every
rank assembles the `FeatureSet` from the now complete cache with `extract_features`, which only reads.
Decoding runs in DataLoader worker processes.

Under Lightning's ``ddp`` strategy the workers re-run the caller's command once rank 0 starts
predicting, i.e. while rank 0 is already filling the cache: a worker that listed the missing items
itself would get a shorter list and the ranks would split different work. So rank 0 writes its work
plan (cache folder, missing images and captions) to a file named in ``SKYFUSE_FEATURE_PLAN`` before
the launch, and the workers, which inherit the environment, follow it; without a cache folder the plan
also names the temporary folder all ranks share (removed by rank 0 after a final barrier). Launchers
that start every rank at once (torchrun, SLURM) need no plan: nothing is written before all ranks
have joined. Tested with 2 CPU processes (gloo).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
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

PLAN_ENV = "SKYFUSE_FEATURE_PLAN"


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
    """Like `extract_features`, with the encoding spread over `devices` by a Lightning Trainer.

    Every rank returns the same `FeatureSet`."""
    import lightning as L

    ids = [image_encoder.encoder_id, text_encoder.encoder_id]
    plan = _read_plan(ids)  # a worker launched by rank 0 follows rank 0's plan
    tmp = None
    if plan is not None:
        root = Path(plan["root"])
    elif cache_dir is None:
        tmp = Path(tempfile.mkdtemp(prefix="skyfuse-features-"))
        root = tmp
    else:
        root = cache_dir
    plan_file: Path | None = None
    trainer = None
    try:
        live = [s for s in samples if captions.get(s.rel) is not None]
        shas, _ = hash_images(live)
        icache = FeatureCache(root, image_encoder.encoder_id, "image", dim=image_encoder.dim)
        tcache = FeatureCache(root, text_encoder.encoder_id, "text", dim=text_encoder.dim)
        paths: dict[str, Path] = {}
        for s in live:
            if s.rel in shas:
                paths.setdefault(shas[s.rel], Path(s.path))
        texts = {text_key(str(captions[s.rel])): str(captions[s.rel]) for s in live}
        if plan is not None:
            todo = [(k, Path(p)) for k, p in plan["images"]]
            ttodo = [(k, t) for k, t in plan["texts"]]
        else:
            todo = [(k, paths[k]) for k in icache.missing(paths)]
            ttodo = sorted(
                ((k, texts[k]) for k in tcache.missing(texts)), key=lambda kv: len(kv[1])
            )
        shared = _from_rank_zero((str(root), [(k, str(p)) for k, p in todo], ttodo))
        if shared is not None:  # ranks already joined (a second call): rank 0's plan for all
            if Path(shared[0]) != root and tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
                tmp = None
            root = Path(shared[0])
            icache = FeatureCache(root, image_encoder.encoder_id, "image", dim=image_encoder.dim)
            tcache = FeatureCache(root, text_encoder.encoder_id, "text", dim=text_encoder.dim)
            todo = [(k, Path(p)) for k, p in shared[1]]
            ttodo = [(k, t) for k, t in shared[2]]
        elif plan is None:  # rank 0 before the launch: the workers it starts inherit the plan
            plan_file = _write_plan(root, ids, todo, ttodo)

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
            trainer.strategy.barrier("skyfuse-image-features")
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
            trainer.strategy.barrier("skyfuse-text-features")
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
        trainer.strategy.barrier("skyfuse-features-read")  # before rank 0 removes a shared folder
        return fs
    finally:
        if plan_file is not None:  # rank 0 (or a single process): the plan and temp folder are its
            plan_file.unlink(missing_ok=True)
            if os.environ.get(PLAN_ENV) == str(plan_file):
                del os.environ[PLAN_ENV]
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)


def _from_rank_zero(value: Any) -> Any:
    """Rank 0's ``value`` on every rank when a process group is running, else None."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _write_plan(
    root: Path, ids: list[str], images: Sequence[tuple[str, Path]], texts: Sequence[tuple[str, str]]
) -> Path:
    """Rank 0's work lists, for the workers Lightning's launcher starts (they inherit the env)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / f".plan-{os.getpid()}-{uuid.uuid4().hex[:8]}.json"
    body = {
        "root": str(root),
        "encoders": ids,
        "images": [[k, str(p)] for k, p in images],
        "texts": [[k, t] for k, t in texts],
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(body), encoding="utf-8")
    os.replace(tmp, path)
    os.environ[PLAN_ENV] = str(path)
    return path


def _read_plan(ids: list[str]) -> dict[str, Any] | None:
    """The plan of the rank 0 that launched this worker, when there is one for these encoders.

    Rank 0 itself never sees one here: it sets the variable after this check and removes it when
    the call ends."""
    where = os.environ.get(PLAN_ENV)
    if not where:
        return None
    try:
        plan = json.loads(Path(where).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return plan if isinstance(plan, dict) and plan.get("encoders") == ids else None
