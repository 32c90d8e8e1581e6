"""Real tiny run and bench folders for report tests, made by the library on token features with a
class signal (no encoders): a synthetic scene folder gives the images, splits and class names."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from skyfuse.data.folder import SceneFolder
from skyfuse.training.config import TrainConfig

CLASSES = ("beach", "forest", "parking_lot")


class Features:
    """A FeatureSet look-alike over every image of ``folder``: label signal in a few tokens."""

    def __init__(self, folder: SceneFolder, seed: int = 0, di: int = 12, dt: int = 8) -> None:
        g = torch.Generator().manual_seed(seed)
        self.rels = [s.rel for s in folder.samples]
        y = torch.tensor([s.label for s in folder.samples])
        n, k = len(y), len(folder.classes)
        hot = torch.nn.functional.one_hot(y, k).float()
        image = torch.randn(n, 5, di, generator=g)
        image[:, :2, :k] += hot[:, None, :] * 1.5
        text = torch.randn(n, 6, dt, generator=g)
        text[:, :2, :k] += hot[:, None, :] * 1.5
        self.image_tokens, self.text_tokens = image.half(), text.half()
        self.image_mask = torch.ones(n, 5, dtype=torch.bool)
        self.text_mask = torch.ones(n, 6, dtype=torch.bool)
        self.image_pooled, self.text_pooled = image.mean(1), text.mean(1)


def scene_folder(root: Path, classes: Sequence[str] = CLASSES, per_class: int = 8) -> SceneFolder:
    from skyfuse.data.synthetic import make_synthetic_dataset

    return SceneFolder(
        make_synthetic_dataset(root, per_class=per_class, size=16, classes=list(classes))
    )


def config(epochs: int = 2, **kw: Any) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=16, accelerator="cpu", **kw)


def make_bench(
    out: Path,
    folder: SceneFolder,
    *,
    models: Sequence[str] = ("concat", "image"),
    seeds: Sequence[int] = (0, 1),
    probes: bool = False,
    epochs: int = 2,
) -> Path:
    """``skyfuse bench --out out`` as the library runs it; returns ``out``."""
    from skyfuse.training.bench import run_bench

    run_bench(
        Features(folder), folder, models=models, seeds=seeds, train_ratio=0.5,
        cfg=config(epochs), fusion={"width": 16, "heads": 2}, out_dir=out,
        image_encoder="img@1", text_encoder="txt@1", dataset=str(folder.root), probes=probes,
    )  # fmt: skip
    return out


def make_run(
    out: Path, folder: SceneFolder, *, model: str = "concat", seed: int = 0, **cfg: Any
) -> Path:
    """``skyfuse train --out out`` as the library runs it (selection on val, so a val history)."""
    from skyfuse.data.splits import make_split
    from skyfuse.training.run import run_training

    split = make_split(folder, train=0.5, seed=seed)
    run_training(
        Features(folder), split, model=model, cfg=config(seed=seed, selection="val", **cfg),
        out_dir=out, image_encoder="img@1", text_encoder="txt@1", fusion={"width": 16, "heads": 2},
        dataset=str(folder.root), save_model=False, plots=False,
    )  # fmt: skip
    return out
