"""The pixel cache: round trip, reuse, corrupt inputs, loader batches, device-side augmentation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from skyfuse.data.folder import SceneFolder
from skyfuse.data.images import load_image
from skyfuse.data.pixelcache import (
    GpuAugment,
    PixelCache,
    PixelCacheDataset,
    build_pixel_cache,
    gpu_augment_for,
    make_loader,
    resize_uint8,
)
from skyfuse.data.transforms import preprocess_image
from skyfuse.encoders.base import ImagePreprocess
from skyfuse.errors import BadInputError, CheckpointError
from tests.conftest import shared_path

PRE = ImagePreprocess(24, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "exact")


@pytest.fixture
def folder(tmp_path: Path) -> SceneFolder:
    rng = np.random.default_rng(0)
    root = tmp_path / "scenes"
    for c, cls in enumerate(["beach", "forest", "river"]):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            arr = rng.integers(0, 256, (40 + 8 * c, 48, 3), dtype=np.uint8)
            ext = ".png" if i % 2 else ".jpg"
            Image.fromarray(arr).save(root / cls / f"{cls} {i}{ext}")
    (root / "river" / "broken.jpg").write_bytes(b"not a jpeg at all")
    return SceneFolder(root)


def test_round_trip_matches_the_encoder_preprocessing(folder: SceneFolder, tmp_path: Path) -> None:
    cache = build_pixel_cache(folder.samples, tmp_path / "c", preprocess=PRE, shard_size=5)
    assert len(cache) == 12
    assert [s.rel for s in cache.skipped] == ["river/broken.jpg"]
    assert "re-export" in cache.skipped[0].reason or "readable" in cache.skipped[0].reason
    assert len(list((tmp_path / "c").glob("pixels-*.safetensors"))) == 3
    by_rel = folder.by_rel()
    for i in (0, 6, 11):
        sample = by_rel[cache.rels[i]]
        assert cache.labels[i] == sample.label
        want = resize_uint8(load_image(sample.path), PRE.size, PRE.resize_mode)
        np.testing.assert_array_equal(cache.pixels([i])[0], want)
        # normalised on the "device", the cached pixels are the encoder's input up to uint8 rounding
        norm = gpu_augment_for(PRE).eval()(torch.from_numpy(cache.pixels([i])))[0]
        ref = preprocess_image(load_image(sample.path), PRE)
        assert (norm - ref).abs().max() <= 0.5 / 255 / 0.5 + 1e-5


def test_pixels_gather_any_order_across_shards(folder: SceneFolder, tmp_path: Path) -> None:
    cache = build_pixel_cache(folder.samples, tmp_path / "c", preprocess=PRE, shard_size=5)
    order = [11, 0, 7, 3, 3, 10]
    gathered = cache.pixels(order)
    for k, i in enumerate(order):
        np.testing.assert_array_equal(gathered[k], cache.pixels([i])[0])
    with pytest.raises(IndexError):
        cache.pixels([12])


def test_reuse_and_invalidation(folder: SceneFolder, tmp_path: Path) -> None:
    out = tmp_path / "c"
    build_pixel_cache(folder.samples, out, preprocess=PRE)
    shard = out / "pixels-00000.safetensors"
    first = shard.stat().st_mtime_ns
    again = build_pixel_cache(folder.samples, out, preprocess=PRE)
    assert shard.stat().st_mtime_ns == first and len(again) == 12
    # a changed source file, or another size, rebuilds
    path = folder.samples[0].path
    os.utime(path, ns=(first + 10**9, first + 10**9))
    assert not PixelCache.open(out).is_current(folder.samples, PRE)
    bigger = ImagePreprocess(16, PRE.mean, PRE.std, "shorter")
    rebuilt = build_pixel_cache(folder.samples, out, preprocess=bigger)
    assert rebuilt.size == 16 and rebuilt.preprocess.resize_mode == "shorter"
    assert PixelCache.open(out).pixels([0]).shape == (1, 16, 16, 3)


def test_bad_caches_give_one_line_errors(folder: SceneFolder, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no pixel cache"):
        PixelCache.open(tmp_path / "nothing")
    out = tmp_path / "c"
    build_pixel_cache(folder.samples, out, preprocess=PRE)
    index = json.loads((out / "index.json").read_text())
    index["version"] = 99
    (out / "index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="rebuild"):
        PixelCache.open(out)
    build_pixel_cache(
        folder.samples, out, preprocess=PRE
    )  # an invalid cache is rebuilt, not trusted
    (out / "pixels-00000.safetensors").write_bytes(b"\x01")
    with pytest.raises(CheckpointError, match="truncated"):
        PixelCache.open(out).pixels([0])
    with pytest.raises(BadInputError, match="resize_mode"):
        build_pixel_cache(
            folder.samples, out, preprocess=ImagePreprocess(8, PRE.mean, PRE.std, "crop")
        )


@pytest.mark.parametrize("workers", [0, 1])
def test_loader_batches_are_aligned(folder: SceneFolder, tmp_path: Path, workers: int) -> None:
    cache = build_pixel_cache(folder.samples, tmp_path / "c", preprocess=PRE, shard_size=4)
    tokens = {"input_ids": torch.arange(len(cache))[:, None].repeat(1, 5)}
    train = [r for r in cache.rels if not r.startswith("forest")] + ["river/broken.jpg"]
    ds = PixelCacheDataset.from_rels(cache, train, tokens)
    assert len(ds) == 8
    loader = make_loader(ds, batch_size=3, shuffle=True, workers=workers, seed=1)
    seen = []
    for batch in loader:
        assert batch["pixels"].dtype == torch.uint8 and batch["pixels"].shape[1:] == (24, 24, 3)
        idx = batch["index"].numpy()
        np.testing.assert_array_equal(batch["labels"].numpy(), cache.labels[idx])
        np.testing.assert_array_equal(batch["pixels"].numpy(), cache.pixels(idx))
        assert (batch["input_ids"][:, 0] == batch["index"]).all()
        seen.extend(cache.rels[i] for i in idx)
    assert sorted(seen) == sorted(r for r in train if r != "river/broken.jpg")
    with pytest.raises(BadInputError, match="not in the pixel cache"):
        PixelCacheDataset.from_rels(cache, ["lake/x.jpg"])


def _dihedral_images(img: torch.Tensor) -> list[torch.Tensor]:
    out = []
    for k in range(4):
        r = torch.rot90(img, k, dims=(-2, -1))
        out += [r, r.flip(-1)]
    return out


def test_augment_applies_one_of_the_eight_symmetries() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 6, 6, 3), dtype=torch.uint8, generator=g)
    aug = GpuAugment((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)).train()
    y = aug(x, generator=torch.Generator().manual_seed(1))
    assert y.shape == (64, 3, 6, 6) and y.dtype == torch.float32
    assert y.is_contiguous(memory_format=torch.channels_last)
    plain = aug.eval()(x)
    hits = set()
    for i in range(64):
        options = _dihedral_images(plain[i])
        match = [k for k, o in enumerate(options) if torch.equal(o, y[i])]
        assert match, f"sample {i} is not a flip/rotation of its input"
        hits.add(match[0])
    assert len(hits) == 8  # every symmetry occurs
    # eval mode: no augmentation; values normalised to [-1, 1]
    assert plain.min() >= -1 - 1e-6 and plain.max() <= 1 + 1e-6
    torch.testing.assert_close(plain, (x.permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5)
    # deterministic for a given generator
    again = aug.train()(x, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(again, y)
    with pytest.raises(BadInputError, match="uint8"):
        aug(torch.zeros(2, 3, 6, 6, dtype=torch.uint8))


def test_real_jpegs(tmp_path: Path) -> None:
    root = shared_path("whu-rs19")
    folder = SceneFolder(root)
    first = {}
    for s in folder.samples:
        first.setdefault(s.class_name, s)
    samples = list(first.values())
    pre = ImagePreprocess(224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "exact")
    cache = build_pixel_cache(samples, tmp_path / "c", preprocess=pre, class_names=folder.classes)
    assert len(cache) == 19 and not cache.skipped
    assert cache.pixels([0]).shape == (1, 224, 224, 3)
    assert sorted(cache.labels.tolist()) == list(range(19))
    assert cache.class_names == folder.classes


def test_ddp_workers_wait_for_rank_zeros_cache(
    folder: SceneFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only rank 0 builds a cache folder: two builders would delete each other's shards."""
    from types import SimpleNamespace

    from skyfuse.data.pixelcache import wait_for_pixel_cache
    from skyfuse.training.finetune_data import build_cached_inputs, pixel_cache_dir

    class Tok:
        def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
            return {"input_ids": torch.ones(len(texts), 3, dtype=torch.long)}

    rels = [s.rel for s in folder.samples]
    split = SimpleNamespace(train=rels[:6], val=[], test=rels[6:])
    caps = dict.fromkeys(rels, "a caption")
    cache_root = tmp_path / "feat"
    where = pixel_cache_dir(folder.root, PRE, cache_root)
    with pytest.raises(BadInputError, match="no complete pixel cache"):
        wait_for_pixel_cache(folder.samples, where, preprocess=PRE, timeout_s=0.05, poll_s=0.01)
    monkeypatch.setenv("LOCAL_RANK", "1")  # a worker started by Lightning's launcher
    with pytest.raises(BadInputError, match="waiting for rank 0"):
        build_cached_inputs(
            folder, split, caps, folder.classes, PRE, Tok(), cache_root, wait_s=0.05
        )
    assert not where.exists()  # the worker built nothing
    monkeypatch.delenv("LOCAL_RANK")
    built, _ = build_cached_inputs(folder, split, caps, folder.classes, PRE, Tok(), cache_root)
    monkeypatch.setenv("LOCAL_RANK", "1")
    seen, tokens = build_cached_inputs(folder, split, caps, folder.classes, PRE, Tok(), cache_root)
    assert seen.rels == built.rels and tokens["input_ids"].shape[0] == len(built)
