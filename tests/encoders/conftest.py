"""Fixtures: tiny random Hugging Face models in temp folders, the bundled encoders, a tiny dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.encoders import tiny_models


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny_models")


@pytest.fixture(scope="session")
def vit_folder(tiny_dir: Path) -> Path:
    return tiny_models.make_vit(tiny_dir / "vit")


@pytest.fixture(scope="session")
def bert_folder(tiny_dir: Path) -> Path:
    return tiny_models.make_bert(tiny_dir / "bert")


@pytest.fixture(scope="session")
def clip_folder(tiny_dir: Path) -> Path:
    return tiny_models.make_clip(tiny_dir / "clip")


@pytest.fixture(scope="session")
def clip_text_folder(tiny_dir: Path) -> Path:
    return tiny_models.make_clip_text(tiny_dir / "cliptext")


@pytest.fixture(scope="session")
def lite0():
    from skyfuse.encoders import create_image_encoder

    return create_image_encoder("efficientnet-lite0")


@pytest.fixture(scope="session")
def minilm():
    from skyfuse.encoders import create_text_encoder

    return create_text_encoder("minilm")


@pytest.fixture(scope="session")
def tiny_vit(vit_folder: Path):
    from skyfuse.encoders import create_image_encoder

    return create_image_encoder(f"hf:{vit_folder}")


@pytest.fixture(scope="session")
def tiny_bert(bert_folder: Path):
    from skyfuse.encoders import create_text_encoder

    return create_text_encoder(f"hf:{bert_folder}")


def write_scene_folder(root: Path, per_class: int = 3, size: int = 40) -> dict[str, str]:
    """A plain scene folder of random images in 3 classes; returns rel -> caption."""
    rng = np.random.default_rng(0)
    captions = {}
    for c, name in enumerate(["beach", "forest", "river"]):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = rng.integers(0, 255, (size, size + 8 * i, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / name / f"{name}_{i}.png")
            words = ["sand water", "many green trees", "a blue river near a road"][c]
            captions[f"{name}/{name}_{i}.png"] = f"{words} {'and grey roofs ' * i}".strip()
    return captions


@pytest.fixture
def scene(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "scenes"
    caps = write_scene_folder(root)
    with open(tmp_path / "captions.jsonl", "w", encoding="utf-8") as f:
        for rel, cap in caps.items():
            f.write(json.dumps({"path": rel, "caption": cap}) + "\n")
    return root, caps
