"""Real pixels and real VLM captions: dual on aid-minitest (LLaVA captions) must beat chance widely."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import shared_path


@pytest.mark.realdata
@pytest.mark.slow
def test_dual_on_aid_minitest_llava_beats_chance(tmp_path: Path) -> None:
    from skyfuse.data.folder import SceneFolder
    from skyfuse.data.splits import make_split
    from skyfuse.training.config import TrainConfig
    from skyfuse.training.prepare import extract, restrict_split
    from skyfuse.training.run import run_training

    root = shared_path("aid-minitest")
    folder = SceneFolder(root)
    captions = folder.texts()  # the LLaVA captions of the paper's sample
    assert len(folder.classes) == 4 and len(captions) == 200
    # 25 images per class keep the test short; images without a caption are left out of the features
    keep = {
        s.rel for c in folder.classes for s in [x for x in folder.samples if x.class_name == c][:25]
    }
    captions = {r: t for r, t in captions.items() if r in keep}
    features = extract(folder, captions, cache_dir=tmp_path / "cache", show_progress=False)
    assert len(features) == 100
    split, _ = restrict_split(make_split(folder, train=0.5, val=0.1, seed=0), set(features.rels))
    result = run_training(
        features, split, model="dual", cfg=TrainConfig(epochs=6, patience=6, seed=0),
        fusion={"width": 64, "heads": 4}, out_dir=None,
        image_encoder=features.image_encoder_id, text_encoder=features.text_encoder_id,
    )  # fmt: skip
    assert result["test"]["n"] == len(split.test) > 30
    assert result["test"]["oa"] > 0.6  # chance is 0.25
