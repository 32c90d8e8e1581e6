"""Synthetic scenes: deterministic, a normal scene folder, labelled synthetic, learnable but not trivial."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from skyfuse.data import SceneFolder, load_image
from skyfuse.data.synthetic import (
    SYNTHETIC_CLASSES,
    SYNTHETIC_MARKER,
    is_synthetic,
    make_synthetic_dataset,
    render_scene,
)
from skyfuse.errors import ConfigError


def test_at_least_eight_named_classes() -> None:
    assert len(SYNTHETIC_CLASSES) >= 8
    assert list(SYNTHETIC_CLASSES) == sorted(SYNTHETIC_CLASSES)
    for needed in (
        "forest",
        "water",
        "farmland",
        "dense_residential",
        "sparse_residential",
        "road_crossing",
        "beach",
        "desert",
        "parking_lot",
    ):
        assert needed in SYNTHETIC_CLASSES


def test_writes_plain_scene_folder_with_marker(tmp_path: Path) -> None:
    root = make_synthetic_dataset(tmp_path / "s", per_class=3, size=64, seed=1)
    folder = SceneFolder(root)
    assert folder.classes == list(SYNTHETIC_CLASSES)
    assert folder.counts() == {c: 3 for c in SYNTHETIC_CLASSES}
    assert is_synthetic(root)
    assert "not real imagery" in (root / SYNTHETIC_MARKER).read_text()
    img = load_image(folder.samples[0].path)
    assert img.size == (64, 64) and img.mode == "RGB"


def test_deterministic_per_seed_and_independent_of_class_list(tmp_path: Path) -> None:
    a = render_scene("forest", 2, size=48, seed=5)
    b = render_scene("forest", 2, size=48, seed=5)
    c = render_scene("forest", 2, size=48, seed=6)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    one = make_synthetic_dataset(tmp_path / "one", per_class=2, size=48, classes=["water"])
    both = make_synthetic_dataset(
        tmp_path / "two", per_class=2, size=48, classes=["beach", "water"]
    )
    for i in range(2):
        name = f"water/water_{i:04d}.jpg"
        assert (one / name).read_bytes() == (both / name).read_bytes()


def test_png_and_bad_arguments(tmp_path: Path) -> None:
    root = make_synthetic_dataset(
        tmp_path, per_class=1, size=32, classes=["desert"], image_format="png"
    )
    assert (root / "desert" / "desert_0000.png").is_file()
    with pytest.raises(ConfigError, match="unknown synthetic class"):
        make_synthetic_dataset(tmp_path, classes=["volcano"])
    with pytest.raises(ConfigError, match="per_class"):
        make_synthetic_dataset(tmp_path, per_class=0)
    with pytest.raises(ConfigError, match="format"):
        make_synthetic_dataset(tmp_path, image_format="gif")


def _features(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = img.astype(np.float32) / 255
    grey = a.mean(2)
    gx, gy = np.abs(np.diff(grey, axis=1)), np.abs(np.diff(grey, axis=0))
    colour = a.mean((0, 1))
    texture = np.array([gx.mean(), gy.mean(), np.percentile(gx, 90), np.percentile(gy, 90)])
    return colour, np.concatenate([colour, a.std((0, 1)), texture])


def _probe_accuracy(x: np.ndarray, y: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return float(cross_val_score(model, x, y, cv=4).mean())


def test_learnable_but_not_by_mean_colour_alone() -> None:
    colour, rich, labels = [], [], []
    for label, name in enumerate(SYNTHETIC_CLASSES):
        for i in range(24):
            c, r = _features(render_scene(name, i, size=96, seed=0))
            colour.append(c)
            rich.append(r)
            labels.append(label)
    y = np.array(labels)
    chance = 1 / len(SYNTHETIC_CLASSES)
    acc_colour = _probe_accuracy(np.array(colour), y)
    acc_rich = _probe_accuracy(np.array(rich), y)
    assert acc_colour < 0.85, acc_colour  # colour alone must not solve it
    assert acc_rich > 4 * chance, acc_rich  # simple texture statistics already help a lot
    assert acc_rich > acc_colour
