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


def test_finetune_trains_encoders_and_writes_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
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
    cache_dir = tmp_path / "cache"
    result = run_finetune(
        folder, split, captions, model="dual", cfg=cfg, fusion={"width": 16, "heads": 2},
        out_dir=out, image_encoder=f"hf:{vit}", text_encoder=f"hf:{bert}", cache_dir=cache_dir,
    )  # fmt: skip
    assert result["mode"] == "finetune" and 0.0 <= result["test"]["oa"] <= 1.0
    assert result["input_pipeline"] == "pixel-cache" and result["skipped_images"] == 0
    (index,) = (cache_dir / "pixels").glob("*/index.json")
    cached = json.loads(index.read_text())
    assert len(cached["images"]) == len(folder) and cached["class_names"] == ["beach", "forest"]
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

    # a second run reuses the cache: decoding any image now would fail the run
    import skyfuse.data.pixelcache as pixelcache

    def no_decode(job: object) -> object:
        raise AssertionError("the pixel cache was rebuilt instead of reused")

    monkeypatch.setattr(pixelcache, "_decode_job", no_decode)
    stamp = index.stat().st_mtime_ns
    second = run_finetune(
        folder, split, captions, model="dual", cfg=cfg.model_copy(update={"epochs": 1}),
        fusion={"width": 16, "heads": 2}, out_dir=tmp_path / "run2", image_encoder=f"hf:{vit}",
        text_encoder=f"hf:{bert}", cache_dir=cache_dir,
    )  # fmt: skip
    assert second["test"]["n"] == len(split.test) and index.stat().st_mtime_ns == stamp


def _task(augment: bool) -> object:
    from skyfuse.data.pixelcache import GpuAugment
    from skyfuse.training.config import TrainConfig
    from skyfuse.training.finetune import FinetuneTask

    gpu = GpuAugment([0.5, 0.4, 0.3], [0.2, 0.25, 0.5], dihedral=augment)
    return FinetuneTask(torch.nn.Linear(1, 1), TrainConfig(), steps_per_epoch=1, augment=gpu)


def test_device_batch_augments_in_training_only() -> None:
    from skyfuse.training.finetune import FinetuneTask

    torch.manual_seed(0)
    pixels = torch.randint(0, 256, (6, 5, 5, 3), dtype=torch.uint8)
    batch = {
        "pixels": pixels,
        "labels": torch.arange(6),
        "index": torch.arange(6),
        "input_ids": torch.tensor([[1, 2, 0, 0]] * 5 + [[1, 2, 3, 0]]),
        "attention_mask": torch.tensor([[1, 1, 0, 0]] * 5 + [[1, 1, 1, 0]]),
    }
    task = _task(augment=True)
    assert isinstance(task, FinetuneTask)
    mean = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)
    std = torch.tensor([0.2, 0.25, 0.5]).view(1, 3, 1, 1)
    expected = (pixels.permute(0, 3, 1, 2).float() / 255 - mean) / std
    task.eval()
    out = task.on_after_batch_transfer(dict(batch), 0)
    assert set(out) == {"pixels", "label", "input_ids", "attention_mask"}
    assert torch.allclose(out["pixels"], expected, atol=1e-5)
    assert torch.equal(out["label"], torch.arange(6)) and out["input_ids"].shape == (6, 4)
    task.train()
    changed = 0
    for _ in range(10):
        aug = task.on_after_batch_transfer(dict(batch), 0)["pixels"]
        for i in range(6):  # each image is one of the 8 symmetries of the square of its original
            x = expected[i]
            options = [torch.rot90(v, k, (1, 2)) for v in (x, x.flip(-1)) for k in range(4)]
            assert any(torch.allclose(aug[i], o, atol=1e-5) for o in options)
            changed += not torch.allclose(aug[i], x, atol=1e-5)
    assert changed > 20
    plain = _task(augment=False)
    assert isinstance(plain, FinetuneTask)
    plain.train()
    assert torch.allclose(
        plain.on_after_batch_transfer(dict(batch), 0)["pixels"], expected, atol=1e-5
    )


def test_pixel_cache_dir_is_keyed_by_folder_and_resize(tmp_path: Path) -> None:
    from skyfuse.encoders.base import ImagePreprocess
    from skyfuse.training.finetune_data import pixel_cache_dir

    a = ImagePreprocess(32, (0.5,) * 3, (0.5,) * 3, "exact")
    b = ImagePreprocess(32, (0.1,) * 3, (0.2,) * 3, "exact")  # only normalisation differs: shared
    c = ImagePreprocess(64, (0.5,) * 3, (0.5,) * 3, "exact")
    assert pixel_cache_dir(tmp_path / "x", a, tmp_path) == pixel_cache_dir(
        tmp_path / "x", b, tmp_path
    )
    assert pixel_cache_dir(tmp_path / "x", a, tmp_path) != pixel_cache_dir(
        tmp_path / "x", c, tmp_path
    )
    assert pixel_cache_dir(tmp_path / "x", a, tmp_path) != pixel_cache_dir(
        tmp_path / "y", a, tmp_path
    )


@pytest.mark.parametrize("bad", [{"lr": -1.0}, {"schedule": "linear"}, {"devices": "x"}])
def test_config_errors_are_one_line(bad: dict[str, object]) -> None:
    """Settings reach training through an experiment (CLI and config files): one line naming the key."""
    from skyfuse.errors import ConfigError
    from skyfuse.experiments.config import TrainExperiment, build_experiment

    overrides = {f"training.{k}": v for k, v in bad.items()}
    with pytest.raises(ConfigError) as err:
        build_experiment(TrainExperiment, overrides=overrides).training.lightning_devices()
    assert "\n" not in str(err.value) and next(iter(bad)) in str(err.value)


def test_caption_batches_are_trimmed_to_their_longest_caption(tmp_path: Path) -> None:
    from skyfuse.data.folder import SceneFolder
    from skyfuse.data.pixelcache import build_pixel_cache
    from skyfuse.data.synthetic import make_synthetic_dataset
    from skyfuse.encoders.base import ImagePreprocess
    from skyfuse.training.finetune_data import CaptionPixelDataset

    folder = SceneFolder(
        make_synthetic_dataset(tmp_path / "d", per_class=2, size=16, classes=["beach", "forest"])
    )
    pre = ImagePreprocess(8, (0.5,) * 3, (0.5,) * 3, "exact")
    cache = build_pixel_cache(list(folder), tmp_path / "c", preprocess=pre)
    n = len(cache)
    mask = torch.zeros(n, 6, dtype=torch.long)
    mask[:, :2] = 1
    mask[n - 1, :5] = 1  # only the last image has a long caption
    tokens = {"input_ids": torch.arange(n * 6).view(n, 6), "attention_mask": mask}
    ds = CaptionPixelDataset(cache, tokens=tokens)
    short = ds.__getitems__(list(range(n - 1)))
    assert short["input_ids"].shape == (n - 1, 2) and short["pixels"].shape == (n - 1, 8, 8, 3)
    assert torch.equal(short["input_ids"], tokens["input_ids"][: n - 1, :2])
    assert ds.__getitems__([0, n - 1])["attention_mask"].shape == (2, 5)
