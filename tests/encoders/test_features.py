"""extract_features and the feature cache: hits, misses, invalidation, corrupt input, safety."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from skyfuse.data.folder import SceneFolder
from skyfuse.encoders import FeatureCache, FeatureSet, extract_features
from skyfuse.encoders.cache import encoder_slug, text_key
from skyfuse.errors import BadInputError


class Counter:
    """Wraps an encoder's encode() to count encoded rows."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, encoder) -> None:
        self.rows = 0
        original = encoder.encode

        def encode(x):
            out = original(x)
            self.rows += out.tokens.shape[0]
            return out

        monkeypatch.setattr(encoder, "encode", encode)


def _run(folder: SceneFolder, caps, ie, te, cache: Path | None) -> FeatureSet:
    return extract_features(
        folder.samples, caps, ie, te, cache_dir=cache, batch_size=4, show_progress=False
    )


def test_shapes_masks_and_order(scene, tiny_vit, tiny_bert) -> None:
    root, caps = scene
    folder = SceneFolder(root)
    fs = _run(folder, caps, tiny_vit, tiny_bert, None)
    assert fs.rels == [s.rel for s in folder.samples]
    m = len(folder)
    assert fs.image_tokens.shape == (m, 17, 32) and fs.image_tokens.dtype == torch.float16
    assert fs.image_mask.shape == (m, 17) and bool(fs.image_mask.all())
    assert fs.image_pooled.shape == (m, 32)
    assert fs.text_tokens.dtype == torch.float16 and fs.text_mask.dtype == torch.bool
    lengths = fs.text_mask.sum(1)
    assert int(lengths.max()) == fs.text_tokens.shape[1] and int(lengths.min()) < int(lengths.max())
    # padding rows are zero, and the real tokens equal a direct encode of that caption
    i = int(lengths.argmin())
    assert float(fs.text_tokens[i, int(lengths[i]) :].abs().sum()) == 0.0
    with torch.inference_mode():
        direct = tiny_bert.encode_texts([caps[fs.rels[i]]])
    n = int(lengths[i])
    assert torch.allclose(fs.text_tokens[i, :n].float(), direct.tokens[0, :n], atol=1e-2)
    assert fs.image_encoder_id == tiny_vit.encoder_id and fs.text_encoder_id == tiny_bert.encoder_id


def test_subset_reorders_and_trims(scene, tiny_vit, tiny_bert) -> None:
    root, caps = scene
    fs = _run(SceneFolder(root), caps, tiny_vit, tiny_bert, None)
    short = min(fs.rels, key=lambda r: len(caps[r]))
    sub = fs.subset([short, fs.rels[0]] if short != fs.rels[0] else [short])
    assert sub.rels[0] == short
    assert sub.text_tokens.shape[1] == int(sub.text_mask.sum(1).max())
    assert torch.equal(sub.image_pooled[0], fs.image_pooled[fs.rels.index(short)])
    with pytest.raises(BadInputError, match="not in the feature set"):
        fs.subset(["nope/x.png"])


def test_cache_hit_miss_and_caption_change(
    scene, tiny_vit, tiny_bert, tmp_path, monkeypatch
) -> None:
    root, caps = scene
    folder = SceneFolder(root)
    cache = tmp_path / "cache"
    first = _run(folder, caps, tiny_vit, tiny_bert, cache)
    assert first.stats["image_computed"] == len(folder) and first.stats["image_cached"] == 0

    img_calls, txt_calls = Counter(monkeypatch, tiny_vit), Counter(monkeypatch, tiny_bert)
    again = _run(folder, caps, tiny_vit, tiny_bert, cache)
    assert img_calls.rows == 0 and txt_calls.rows == 0
    assert again.stats == {
        "image_cached": len(folder),
        "image_computed": 0,
        "text_cached": len(set(caps.values())),
        "text_computed": 0,
        "text_truncated": 0,
    }
    assert torch.equal(again.image_tokens, first.image_tokens)
    assert torch.equal(again.text_tokens, first.text_tokens)

    changed = dict(caps)
    rel = folder.samples[0].rel
    changed[rel] = "a completely new caption with a runway"
    third = _run(folder, changed, tiny_vit, tiny_bert, cache)
    assert img_calls.rows == 0 and txt_calls.rows == 1  # only the changed caption
    i = third.rels.index(rel)
    assert not torch.equal(third.text_pooled[i], first.text_pooled[i])
    assert torch.equal(third.text_pooled[1:], first.text_pooled[1:])


def test_changed_image_bytes_are_recomputed(
    scene, tiny_vit, tiny_bert, tmp_path, monkeypatch
) -> None:
    from PIL import Image

    root, caps = scene
    folder = SceneFolder(root)
    cache = tmp_path / "cache"
    first = _run(folder, caps, tiny_vit, tiny_bert, cache)
    target = folder.samples[2]
    Image.new("RGB", (40, 40), "yellow").save(target.path)
    calls = Counter(monkeypatch, tiny_vit)
    second = _run(folder, caps, tiny_vit, tiny_bert, cache)
    assert calls.rows == 1
    i = second.rels.index(target.rel)
    assert not torch.equal(second.image_pooled[i], first.image_pooled[i])


def test_other_encoder_uses_its_own_cache(scene, tiny_vit, tiny_bert, lite0, tmp_path) -> None:
    root, caps = scene
    folder = SceneFolder(root)
    cache = tmp_path / "cache"
    _run(folder, caps, tiny_vit, tiny_bert, cache)
    fs = _run(folder, caps, lite0, tiny_bert, cache)
    assert fs.stats["image_computed"] == len(folder) and fs.stats["text_computed"] == 0
    assert fs.image_tokens.shape[1:] == (49, 1280)
    dirs = sorted(p.name for p in (cache / "image").iterdir())
    assert dirs == sorted([encoder_slug(tiny_vit.encoder_id), encoder_slug(lite0.encoder_id)])


def test_corrupt_image_and_missing_caption_are_skipped(
    scene, tiny_vit, tiny_bert, tmp_path
) -> None:
    root, caps = scene
    folder = SceneFolder(root)
    bad = folder.samples[1]
    bad.path.write_bytes(b"\x89PNG broken")
    no_caption = folder.samples[3].rel
    caps = {r: c for r, c in caps.items() if r != no_caption}
    fs = _run(folder, caps, tiny_vit, tiny_bert, tmp_path / "cache")
    assert len(fs) == len(folder) - 2
    assert bad.rel not in fs.rels and no_caption not in fs.rels
    assert str(bad.path) in fs.skipped[bad.rel] and "no caption" in fs.skipped[no_caption]
    with pytest.raises(BadInputError, match="none of the"):
        _run(folder, {}, tiny_vit, tiny_bert, None)


def test_cache_files_are_safetensors_and_atomic(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path, "enc@abc", "text", dim=4)
    key = text_key("hello")
    shard = cache.put({key: (torch.ones(3, 4), torch.zeros(4))})
    assert shard is not None and shard.suffix == ".safetensors"
    assert not list(shard.parent.glob("*.tmp")) and not list(shard.parent.glob(".*.tmp"))
    with safe_open(str(shard), framework="pt") as f:
        assert f.metadata()["encoder_id"] == "enc@abc"
        assert f.get_tensor(f"{key}.tokens").dtype == torch.float16
    fresh = FeatureCache(tmp_path, "enc@abc", "text", dim=4)
    tokens, pooled = fresh.get([key])[key]
    assert tokens.shape == (3, 4) and pooled.dtype == torch.float32
    assert fresh.missing([key, "other"]) == ["other"]
    # a damaged shard is ignored (its entries count as misses), never fatal
    (shard.parent / "zz-broken.safetensors").write_bytes(b"garbage")
    assert key in FeatureCache(tmp_path, "enc@abc", "text")
    # a different width (wrong encoder) is not served
    assert FeatureCache(tmp_path, "enc@abc", "text", dim=8).get([key]) == {}


def test_trainable_encoder_bypasses_cache(scene, vit_folder, tiny_bert, tmp_path) -> None:
    from skyfuse.encoders import create_image_encoder

    root, caps = scene
    enc = create_image_encoder(f"hf:{vit_folder}", trainable=True)
    _run(SceneFolder(root), caps, enc, tiny_bert, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_lightning_predict_path_matches(scene, tiny_vit, tiny_bert, tmp_path) -> None:
    from skyfuse.encoders.distributed import extract_features_distributed

    root, caps = scene
    folder = SceneFolder(root)
    fs = extract_features_distributed(
        folder.samples,
        caps,
        tiny_vit,
        tiny_bert,
        cache_dir=tmp_path / "cache",
        batch_size=4,
        devices=1,
        accelerator="cpu",
        num_workers=0,
        show_progress=False,
    )
    assert fs.stats["image_computed"] == len(folder) and fs.stats["image_cached"] == 0
    ref = _run(folder, caps, tiny_vit, tiny_bert, None)
    assert fs.rels == ref.rels
    assert torch.allclose(fs.image_tokens.float(), ref.image_tokens.float(), atol=1e-3)
    assert torch.allclose(fs.text_pooled, ref.text_pooled, atol=1e-3)


def test_truncated_captions_are_counted(scene, tiny_vit, bert_folder) -> None:
    from skyfuse.encoders import create_text_encoder

    root, caps = scene
    short = create_text_encoder(f"hf:{bert_folder}", max_length=6)
    fs = _run(SceneFolder(root), caps, tiny_vit, short, None)
    expected = sum(len(short.tokenize([c])["input_ids"][0]) >= 6 for c in set(caps.values()))
    assert fs.stats["text_truncated"] == short.count_truncated(list(set(caps.values()))) > 0
    assert fs.text_tokens.shape[1] == 6 and expected >= fs.stats["text_truncated"]


def test_all_images_unreadable_gives_an_empty_set(scene, tiny_vit, tiny_bert) -> None:
    root, caps = scene
    folder = SceneFolder(root)
    for s in folder.samples:
        s.path.write_bytes(b"")
    fs = _run(folder, caps, tiny_vit, tiny_bert, None)
    assert len(fs) == 0 and len(fs.skipped) == len(folder)
    assert fs.image_tokens.shape == (0, 1, 32) and fs.image_pooled.shape == (0, 32)
    assert fs.text_pooled.shape == (0, tiny_bert.dim)


def test_image_changed_after_hashing_is_not_cached_under_the_old_key(
    scene, tiny_vit, tmp_path
) -> None:
    from skyfuse.data.images import sha256_file
    from skyfuse.encoders.features import load_pixels

    root, _ = scene
    sample = SceneFolder(root).samples[0]
    key = sha256_file(sample.path)
    sample.path.write_bytes(SceneFolder(root).samples[1].path.read_bytes())
    keys, pixels, failed = load_pixels([(key, sample.path)], tiny_vit)
    assert keys == [] and pixels is None and "changed while" in failed[key]
