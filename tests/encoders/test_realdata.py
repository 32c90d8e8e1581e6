"""Bundled encoders on real AID images and LLaVA captions (skipped when ../shared/data is absent)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from skyfuse.captioning import load_captions
from skyfuse.data.folder import SceneFolder
from skyfuse.encoders import extract_features
from tests.conftest import shared_path


@pytest.mark.realdata
def test_bundled_features_separate_real_classes(lite0, minilm, tmp_path) -> None:
    root = shared_path("aid-minitest")
    folder = SceneFolder(root)
    per_class = 5
    picked = [
        s
        for c in folder.classes
        for s in [x for x in folder.samples if x.class_name == c][:per_class]
    ]
    captions = load_captions(root / "text", root)
    fs = extract_features(
        picked, captions, lite0, minilm, cache_dir=tmp_path, batch_size=16, show_progress=False
    )
    assert len(fs) == len(picked) and not fs.skipped
    labels = torch.tensor([folder.class_to_idx[r.split("/")[0]] for r in fs.rels])
    # leave-one-out nearest centroid on pooled image features: far above chance (25 %) when the
    # weights load and the preprocessing matches the encoder
    x = F.normalize(fs.image_pooled, dim=-1)
    correct = 0
    for i in range(len(x)):
        keep = torch.arange(len(x)) != i
        cents = torch.stack([x[keep & (labels == c)].mean(0) for c in range(len(folder.classes))])
        correct += int((cents @ x[i]).argmax() == labels[i])
    assert correct / len(x) >= 0.7
    assert fs.text_mask.sum(1).max() <= 128
