"""Lazy weights: a frozen encoder knows its id, width and preprocessing before loading its network,
loads on first real use, and behaves exactly like one that loaded at once."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from skyfuse.data.folder import SceneFolder
from skyfuse.encoders import create_image_encoder, create_text_encoder, extract_features
from skyfuse.encoders.cache import FeatureCache


def _run(folder: SceneFolder, caps, ie, te, cache: Path | None):
    return extract_features(
        folder.samples, caps, ie, te, cache_dir=cache, batch_size=4, show_progress=False
    )


def test_frozen_encoders_defer_their_weights(vit_folder: Path, bert_folder: Path) -> None:
    vit = create_image_encoder(f"hf:{vit_folder}")
    bert = create_text_encoder(f"hf:{bert_folder}")
    lite0 = create_image_encoder("efficientnet-lite0", grid=2)
    for enc in (vit, bert, lite0):
        assert not enc.weights_loaded and enc.frozen and not enc.training
        assert enc.encoder_id and enc.dim > 0
    assert (vit.dim, bert.dim, lite0.dim, bert.max_length) == (32, 32, 1280, 64)
    assert vit.preprocess_cfg.size == 32 and lite0.preprocess_cfg.size == 224
    assert "_tokenizer" in bert.__dict__ and bert.__dict__["_tokenizer"] is None
    # the ids equal those of encoders that load at once (the cache must not split)
    assert vit.encoder_id == create_image_encoder(f"hf:{vit_folder}", trainable=True).encoder_id
    assert bert.encoder_id == create_text_encoder(f"hf:{bert_folder}", trainable=True).encoder_id


def test_to_before_loading_is_replayed(bert_folder: Path) -> None:
    enc = create_text_encoder(f"hf:{bert_folder}")
    assert enc.to("meta") is enc and not enc.weights_loaded
    assert enc.device == torch.device("meta")
    enc.to(torch.float64)  # a dtype-only move keeps the pending device
    assert enc.device == torch.device("meta")
    enc.load_weights()
    p = next(enc.parameters())
    assert p.device.type == "meta" and p.dtype == torch.float64


def test_lazy_and_eager_give_the_same_outputs_and_state(tiny_vit, vit_folder: Path) -> None:
    lazy = create_image_encoder(f"hf:{vit_folder}")
    eager = create_image_encoder(f"hf:{vit_folder}", trainable=True).freeze()
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        a, b = lazy.encode(x), eager.encode(x)
    assert lazy.weights_loaded and torch.equal(a.tokens, b.tokens)
    assert all(not p.requires_grad for p in lazy.parameters())
    lazy.train()
    assert not lazy.training and not lazy.model.training  # frozen stays in eval
    assert lazy.state_dict().keys() == eager.state_dict().keys()


def test_parents_see_the_weights(bert_folder: Path) -> None:
    """A lazy encoder inside another module: parameters, state_dict and load_state_dict load it."""

    class Parent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc = create_text_encoder(f"hf:{bert_folder}")
            self.head = nn.Linear(32, 2)

    source = Parent()
    state = source.state_dict()
    assert any(k.startswith("enc.model.") for k in state) and source.enc.weights_loaded
    target = Parent()
    assert not target.enc.weights_loaded
    target.load_state_dict(state, strict=True)
    assert target.enc.weights_loaded
    with torch.no_grad():
        next(source.enc.parameters()).add_(1.0)  # the copy follows the state, not the file
    assert not torch.equal(next(source.enc.parameters()), next(target.enc.parameters()))
    assert len(list(Parent().parameters())) == len(list(source.parameters()))


def test_lite0_lazy_state_and_folding() -> None:
    enc = create_image_encoder("efficientnet-lite0", grid=1)
    assert not enc.weights_loaded and enc.folded
    with pytest.raises(Exception, match="trainable=True"):
        enc.freeze(False)
    assert not enc.weights_loaded  # the refusal did not load anything
    assert isinstance(enc.net._bn0, nn.Identity) and enc.weights_loaded  # attribute access loads


def test_bad_weights_fail_at_creation(tmp_path: Path) -> None:
    from skyfuse.errors import CheckpointError

    bad = tmp_path / "lite0.pth"
    bad.write_text("not weights")
    with pytest.raises(CheckpointError, match="not a PyTorch weights file"):
        create_image_encoder("efficientnet-lite0", weights=bad)


def test_fully_cached_run_loads_neither_weights_nor_tokenizer(
    scene, vit_folder: Path, bert_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, caps = scene
    folder = SceneFolder(root)
    cache = tmp_path / "cache"
    kw = {"max_length": 6}  # some captions fill it: the truncation count must still be right
    cold = _run(
        folder,
        caps,
        create_image_encoder(f"hf:{vit_folder}"),
        create_text_encoder(f"hf:{bert_folder}", **kw),
        cache,
    )
    assert cold.stats["text_truncated"] > 0

    ie, te = (
        create_image_encoder(f"hf:{vit_folder}"),
        create_text_encoder(f"hf:{bert_folder}", **kw),
    )
    warm = _run(folder, caps, ie, te, cache)
    assert warm.stats == {**cold.stats, **{"image_cached": len(folder), "image_computed": 0}} | {
        "text_cached": cold.stats["text_computed"],
        "text_computed": 0,
    }
    assert torch.equal(warm.text_tokens, cold.text_tokens)
    assert not ie.weights_loaded and not te.weights_loaded
    assert te.__dict__["_tokenizer"] is None

    # shards written before token lengths were recorded: the tokenizer fills the gap
    monkeypatch.setattr(FeatureCache, "token_lengths", lambda self: {})
    te2 = create_text_encoder(f"hf:{bert_folder}", **kw)
    old = _run(folder, caps, ie, te2, cache)
    assert old.stats["text_truncated"] == cold.stats["text_truncated"]
    assert te2.__dict__["_tokenizer"] is not None and not te2.weights_loaded


def test_concurrent_first_encodes_load_once(bert_folder: Path, monkeypatch) -> None:
    """A server's first requests may arrive together: one load, every caller gets real outputs."""
    import threading
    import time

    enc = create_text_encoder(f"hf:{bert_folder}")
    loads = []
    original = enc._load_weights

    def slow_load() -> None:
        loads.append(1)
        time.sleep(0.2)  # widen the window in which a second thread could see half a module
        original()

    monkeypatch.setattr(enc, "_load_weights", slow_load)
    batch = enc.tokenize(["red roofs near a road"])
    results: list[torch.Tensor] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with torch.inference_mode():
                results.append(enc.encode(batch).pooled)
        except BaseException as exc:  # collected and re-checked in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(loads) == 1 and len(results) == 3
    assert all(torch.equal(r, results[0]) for r in results)


def test_missing_tokenizer_fails_at_creation(tmp_path: Path, bert_folder: Path) -> None:
    """Without vocabulary files transformers would build an empty tokenizer (every word [UNK])."""
    import shutil

    from skyfuse.errors import CheckpointError

    broken = tmp_path / "bert"
    shutil.copytree(bert_folder, broken)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        (broken / name).unlink()
    with pytest.raises(CheckpointError, match="no tokenizer files") as err:
        create_text_encoder(f"hf:{broken}")
    assert "\n" not in str(err.value) and str(broken) in str(err.value)
