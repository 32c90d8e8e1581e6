"""Real pixels and real VLM captions: dual on aid-minitest with class names masked out of the captions.

Raw LLaVA captions name their class 73 % of the time, so a model that ignored the image would still
pass a loose threshold on them. With masked captions the text alone is far weaker (about 85 % with 4
training images per class, BENCHMARKS.md), so the checks below fail when either path breaks: the
model must be near-perfect with both inputs, and scoring it on images paired with the wrong tokens
(image tokens of other samples) must cost it most of its accuracy.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from tests.conftest import shared_path


@pytest.mark.realdata
@pytest.mark.slow
def test_dual_on_aid_minitest_masked_llava_uses_both_paths(tmp_path: Path) -> None:
    from skyfuse.captioning import mask_captions
    from skyfuse.data.folder import SceneFolder
    from skyfuse.data.splits import make_split
    from skyfuse.models import FusionConfig, create_model
    from skyfuse.training.config import TrainConfig
    from skyfuse.training.data import TensorSet
    from skyfuse.training.evaluate import evaluate_model
    from skyfuse.training.fit import train_features
    from skyfuse.training.prepare import extract, restrict_split

    root = shared_path("aid-minitest")
    folder = SceneFolder(root)
    captions = mask_captions(
        folder.texts(), folder.classes
    )  # the LLaVA captions, class words hidden
    assert len(folder.classes) == 4 and len(captions) == 200
    keep = {
        s.rel for c in folder.classes for s in [x for x in folder.samples if x.class_name == c][:25]
    }
    captions = {r: t for r, t in captions.items() if r in keep}
    features = extract(folder, captions, cache_dir=tmp_path / "cache", show_progress=False, views=2)
    assert len(features) == 100 and len(features.image_views) == 2
    split, _ = restrict_split(make_split(folder, train=0.5, val=0.1, seed=0), set(features.rels))
    classes = list(split.classes)
    train = TensorSet.from_features(features, [*split.train, *split.val], classes)
    test = TensorSet.from_features(features, split.test, classes)
    cfg = FusionConfig(
        model="dual", image_dim=train.image_dim, text_dim=train.text_dim,
        num_classes=len(classes), width=64, linear_path=True,
    )  # fmt: skip
    out = train_features(
        lambda: create_model(cfg), train, None, TrainConfig(epochs=12, seed=0, views=2)
    )
    assert len(test) > 40
    both = evaluate_model(out.model, test, classes)["oa"]
    assert both >= 0.95, both  # image alone reaches ~0.98 here; a broken path shows at once
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(test), generator=g)
    assert test.views is not None
    wrong_images = dataclasses.replace(
        test, image_tokens=test.image_tokens[perm], views=test.views[:, perm]
    )
    mixed = evaluate_model(out.model, wrong_images, classes)["oa"]
    assert mixed < both - 0.3, (both, mixed)  # the image carries most of the decision
