from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from skyfuse.errors import CheckpointError, ConfigError
from skyfuse.models import FusionConfig, create_model
from skyfuse.training.bundle import MANIFEST, WEIGHTS, load_bundle, save_bundle


def _model(shared: bool = False) -> tuple[torch.nn.Module, FusionConfig]:
    cfg = FusionConfig(
        model="dual",
        image_dim=12,
        text_dim=8,
        num_classes=3,
        width=16,
        heads=2,
        shared_weights=shared,
    )
    torch.manual_seed(0)
    return create_model(cfg), cfg


@pytest.mark.parametrize("shared", [False, True])
def test_round_trip_same_outputs(tmp_path: Path, shared: bool) -> None:
    model, cfg = _model(shared)
    out = save_bundle(
        tmp_path / "model",
        model,
        cfg,
        class_names=["a", "b", "c"],
        image_encoder="img-x",
        text_encoder="txt-y",
        prompt_id="ground",
        extra={"seed": 3},
    )
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST, WEIGHTS])
    b = load_bundle(out)
    assert (b.class_names, b.image_encoder, b.text_encoder, b.prompt_id) == (
        ["a", "b", "c"],
        "img-x",
        "txt-y",
        "ground",
    )
    assert b.extra == {"seed": 3} and b.config == cfg
    x, xm = torch.randn(2, 5, 12), torch.ones(2, 5, dtype=torch.bool)
    t, tm = torch.randn(2, 4, 8), torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    model.eval()
    assert torch.allclose(model(x, xm, t, tm).logits, b.model(x, xm, t, tm).logits, atol=1e-6)


def test_overwrite_is_atomic_and_leaves_no_temp(tmp_path: Path) -> None:
    model, cfg = _model()
    for _ in range(2):
        save_bundle(
            tmp_path / "m",
            model,
            cfg,
            class_names=["a", "b", "c"],
            image_encoder="i",
            text_encoder="t",
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_errors(tmp_path: Path) -> None:
    model, cfg = _model()
    with pytest.raises(ConfigError, match="class names"):
        save_bundle(
            tmp_path / "m", model, cfg, class_names=["a"], image_encoder="i", text_encoder="t"
        )
    with pytest.raises(CheckpointError, match="not found"):
        load_bundle(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a skyfuse model bundle"):
        load_bundle(tmp_path / "empty")
    out = save_bundle(
        tmp_path / "m", model, cfg, class_names=list("abc"), image_encoder="i", text_encoder="t"
    )
    data = json.loads((out / MANIFEST).read_text())
    data["config"]["width"] = 32
    (out / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_bundle(out)
    (out / MANIFEST).write_text("{broken")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_bundle(out)


def test_weights_file_is_not_pickle(tmp_path: Path) -> None:
    model, cfg = _model()
    out = save_bundle(
        tmp_path / "m", model, cfg, class_names=list("abc"), image_encoder="i", text_encoder="t"
    )
    head = (out / WEIGHTS).read_bytes()[:8]
    header_len = int.from_bytes(head, "little")  # safetensors: u64 header size then JSON
    assert (out / WEIGHTS).read_bytes()[8 : 8 + header_len].startswith(b"{")


def test_not_a_manifest_says_what_to_pass(tmp_path: Path) -> None:
    (tmp_path / "notbundle").mkdir()
    (tmp_path / "notbundle" / MANIFEST).write_text("{}")
    with pytest.raises(CheckpointError, match="pass the model/ folder a `skyfuse train` run wrote"):
        load_bundle(tmp_path / "notbundle")


def test_caption_source_is_recorded_and_old_bundles_load(tmp_path: Path) -> None:
    model, cfg = _model()
    src = {"kind": "files", "file": "rsicd.json", "id": "files:rsicd.json"}
    kw = {"class_names": ["a", "b", "c"], "image_encoder": "i", "text_encoder": "t"}
    out = save_bundle(tmp_path / "m", model, cfg, caption_source=src, **kw)  # type: ignore[arg-type]
    assert load_bundle(out).caption_source == src
    old = save_bundle(tmp_path / "old", model, cfg, **kw)  # type: ignore[arg-type]
    data = json.loads((old / MANIFEST).read_text())
    data.pop("caption_source")  # as written before sources were recorded
    (old / MANIFEST).write_text(json.dumps(data))
    assert load_bundle(old).caption_source is None


@pytest.mark.parametrize(
    ("field", "value"), [("width", 2_000_000), ("levels", 64), ("num_classes", 10**9)]
)
def test_absurd_sizes_are_refused_before_allocation(tmp_path: Path, field: str, value: int) -> None:
    model, cfg = _model()
    out = save_bundle(
        tmp_path / "m", model, cfg, class_names=["a", "b", "c"], image_encoder="i", text_encoder="t"
    )
    data = json.loads((out / MANIFEST).read_text())
    data["config"][field] = value
    if field == "num_classes":
        data["class_names"] = [str(i) for i in range(3)]  # the class-count check comes first
        data["config"]["num_classes"] = 3
        data["config"]["image_dim"] = value  # a huge input projection instead
    if field == "width":
        data["config"]["heads"] = 1
    (out / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="asks for"):
        load_bundle(out)
