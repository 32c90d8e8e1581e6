"""End-to-end fine-tuning mode on tiny random Hugging Face encoders, and the aerial augmentation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from skyfuse.training.augment import aerial_augment
from tests.encoders import tiny_models


def test_augment_is_a_symmetry_of_the_square() -> None:
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(40):
        y = aerial_augment(x, g)
        assert y.shape == x.shape
        for i in range(2):
            assert torch.equal(y[i].flatten().sort().values, x[i].flatten().sort().values)
            seen.add(tuple(y[i, 0].flatten().tolist()))
    assert len(seen) > 8  # several of the 8 transforms per image occurred
    wide = torch.randn(3, 3, 4, 6)
    assert aerial_augment(wide, g).shape == wide.shape


def test_finetune_trains_encoders_and_writes_bundle(tmp_path: Path) -> None:
    from skyfuse.data.folder import SceneFolder
    from skyfuse.data.splits import make_split
    from skyfuse.data.synthetic import make_synthetic_dataset
    from skyfuse.training.bundle import load_bundle
    from skyfuse.training.config import TrainConfig
    from skyfuse.training.finetune import run_finetune

    torch.set_num_threads(1)
    data = make_synthetic_dataset(tmp_path / "d", per_class=5, size=32, classes=["beach", "forest"])
    folder = SceneFolder(data)
    captions = {
        s.rel: f"an image with {'sand water' if s.class_name == 'beach' else 'green trees'}"
        for s in folder
    }
    split = make_split(folder, train=0.6, val=0.2, seed=0)
    vit = tiny_models.make_vit(tmp_path / "vit")
    bert = tiny_models.make_bert(tmp_path / "bert")
    cfg = TrainConfig(
        epochs=2, batch_size=4, finetune=True, num_workers=0, accelerator="cpu", devices="1"
    )
    out = tmp_path / "run"
    result = run_finetune(
        folder, split, captions, model="dual", cfg=cfg, fusion={"width": 16, "heads": 2},
        out_dir=out, image_encoder=f"hf:{vit}", text_encoder=f"hf:{bert}",
    )  # fmt: skip
    assert result["mode"] == "finetune" and 0.0 <= result["test"]["oa"] <= 1.0
    assert json.loads((out / "metrics.json").read_text())["test"]["n"] == len(split.test)
    for name in ("model.safetensors", "image_encoder.safetensors", "text_encoder.safetensors"):
        assert (out / "model" / name).is_file()
    bundle = load_bundle(out / "model")
    assert bundle.extra["finetuned_encoders"] is True and bundle.class_names == ["beach", "forest"]
    assert (out / "checkpoints" / "finetune" / "last.ckpt").is_file()
    ckpt = torch.load(out / "checkpoints" / "finetune" / "last.ckpt", weights_only=True)
    assert any(k.startswith("model.image_encoder.") for k in ckpt["state_dict"])

    # the saved fine-tuned encoders + fusion reproduce the test score (not the stock encoders)
    from skyfuse.training.data import TensorSet
    from skyfuse.training.evaluate import evaluate_model
    from skyfuse.training.finetune import load_finetuned_encoders
    from skyfuse.training.prepare import extract

    encoders = load_finetuned_encoders(out / "model", f"hf:{vit}", f"hf:{bert}")
    features = extract(folder, captions, encoders=encoders, show_progress=False, use_cache=False)
    test = TensorSet.from_features(features, split.test, bundle.class_names)
    again = evaluate_model(bundle.model, test, bundle.class_names)
    assert again["confusion"] == result["test"]["confusion"]


@pytest.mark.parametrize("bad", [{"lr": -1.0}, {"schedule": "linear"}, {"devices": "x"}])
def test_config_errors_are_one_line(bad: dict[str, object]) -> None:
    from skyfuse.errors import ConfigError
    from skyfuse.training.config import TrainConfig

    with pytest.raises(ConfigError):
        TrainConfig(**bad).lightning_devices()
