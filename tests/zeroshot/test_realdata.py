"""Caption-only zero-shot on the real AID sample (LLaVA captions); skipped when ../shared/data is absent."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import shared_path


@pytest.mark.realdata
def test_caption_only_on_aid_minitest() -> None:
    from skyfuse.captioning import load_captions, mask_captions
    from skyfuse.data.folder import SceneFolder
    from skyfuse.encoders import create_text_encoder
    from skyfuse.zeroshot.baselines import caption_only_scores
    from skyfuse.zeroshot.classes import resolve_classes
    from skyfuse.zeroshot.embeddings import class_embeddings, embed_texts
    from skyfuse.zeroshot.metrics import zsl_metrics

    root = shared_path("aid-minitest")
    folder = SceneFolder(root)
    assert folder.classes == ["Airport", "BareLand", "BaseballField", "Beach"]
    captions = load_captions(root / "text", root)
    samples = [s for s in folder.samples if int(s.path.stem.rsplit("_", 1)[-1]) <= 15]  # 60 images
    rels = [s.rel for s in samples]
    labels = torch.tensor([s.label for s in samples])
    encoder = create_text_encoder("minilm")
    classes = class_embeddings(encoder, resolve_classes(folder.classes))
    acc = {}
    for name, caps in (("raw", captions), ("masked", mask_captions(captions, folder.classes))):
        vec = embed_texts(encoder, [caps[r] for r in rels])
        acc[name] = zsl_metrics(caption_only_scores(vec, classes), labels)["top1"]
    # 68 % of these captions name their class: raw captions are easy, masked ones much harder
    assert acc["raw"] > 0.75, acc
    assert acc["masked"] < acc["raw"] - 0.1, acc
