"""`hf:` encoders on tiny random ViT / BERT / CLIP models built in temp folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from PIL import Image

from skyfuse.encoders import create_image_encoder, create_text_encoder


def test_vit_all_tokens_and_config_preprocessing(tiny_vit) -> None:
    cfg = tiny_vit.preprocess_cfg
    assert (cfg.size, cfg.mean, cfg.std, cfg.resize_mode) == (32, (0.5,) * 3, (0.5,) * 3, "exact")
    pixels = tiny_vit.preprocess([Image.new("RGB", (50, 40), "blue")] * 2)
    assert pixels.shape == (2, 3, 32, 32)
    with torch.inference_mode():
        out = tiny_vit.encode(pixels)
    assert out.tokens.shape == (2, 1 + (32 // 8) ** 2, 32)  # CLS + 16 patches
    assert bool(out.mask.all()) and torch.equal(out.pooled, out.tokens[:, 0])
    assert tiny_vit.encoder_id.startswith("hf:vit@")


def test_preprocessing_comes_from_the_model_config(tmp_path: Path, vit_folder: Path) -> None:
    other = tmp_path / "vit"
    shutil.copytree(vit_folder, other)
    cfg = json.loads((other / "preprocessor_config.json").read_text())
    cfg.update(image_mean=[0.1, 0.2, 0.3], image_std=[0.2, 0.2, 0.2])
    (other / "preprocessor_config.json").write_text(json.dumps(cfg))
    enc = create_image_encoder(f"hf:{other}")
    assert enc.preprocess_cfg.mean == (0.1, 0.2, 0.3)
    base = create_image_encoder(f"hf:{vit_folder}")
    assert enc.encoder_id != base.encoder_id  # same weights, other preprocessing: other cache
    white = Image.new("RGB", (32, 32), "white")
    assert torch.allclose(enc.preprocess([white])[0, :, 0, 0], torch.tensor([4.5, 4.0, 3.5]))


def test_bert_masked_mean(tiny_bert) -> None:
    with torch.inference_mode():
        out = tiny_bert.encode_texts(["red roof", "many green trees near the river and a road"])
    assert out.tokens.shape[0] == 2 and out.tokens.shape[2] == 32 == tiny_bert.dim
    w = out.mask.float().unsqueeze(-1)
    assert torch.allclose(out.pooled, (out.tokens * w).sum(1) / w.sum(1), atol=1e-5)
    assert tiny_bert.max_length == 64  # capped by the model's position limit


def test_clip_text_tower_loads_from_a_full_clip_checkpoint(clip_folder: Path) -> None:
    from transformers import CLIPModel

    enc = create_text_encoder(f"hf:{clip_folder}")
    ref = CLIPModel.from_pretrained(clip_folder).eval()
    texts = ["red roof", "many green trees near the river"]
    batch = enc.tokenize(texts)
    with torch.inference_mode():
        out = enc.encode(batch)
        expected = ref.text_model(**batch)
    assert enc.dim == 24 and enc.max_length == 16  # CLIP's position limit (77 for the real model)
    assert torch.allclose(out.tokens, expected.last_hidden_state, atol=1e-5)
    assert torch.allclose(out.pooled, expected.pooler_output, atol=1e-5)
    assert torch.equal(out.mask, batch["attention_mask"].bool())


def test_clip_vision_tower(clip_folder: Path) -> None:
    enc = create_image_encoder(f"hf:{clip_folder}")
    cfg = enc.preprocess_cfg
    # the openai/clip-vit-base-patch32 layout: size + crop_size as ints, bicubic resampling
    assert (cfg.resize_mode, cfg.size, cfg.interpolation) == ("shorter", 32, "bicubic")
    assert abs(cfg.mean[0] - 0.4815) < 1e-3 and enc.encoder_id.endswith("-bicubic")
    with torch.inference_mode():
        out = enc.encode(enc.preprocess([Image.new("RGB", (48, 32), "red")]))
    assert out.tokens.shape == (1, 1 + 4, 24)


def test_clip_text_only_model(clip_text_folder: Path) -> None:
    enc = create_text_encoder(f"hf:{clip_text_folder}", max_length=8)
    with torch.inference_mode():
        out = enc.encode_texts(["a red roof " * 10])
    assert out.tokens.shape[1] == 8 and enc.pooling == "pooler"


def test_hf_trainable_gets_gradients(vit_folder: Path) -> None:
    enc = create_image_encoder(f"hf:{vit_folder}", trainable=True)
    enc.train()
    out = enc.encode(torch.randn(1, 3, 32, 32))
    out.pooled.sum().backward()
    assert any(p.grad is not None for p in enc.parameters())


def test_tiny_tokenizer_knows_its_words(tiny_bert, clip_text_folder: Path) -> None:
    """The tiny models must really read text: known words map to their own ids, not [UNK]."""
    from tests.encoders.tiny_models import vocabulary

    enc_clip = create_text_encoder(f"hf:{clip_text_folder}")
    caption = "Many green trees near the river"
    for enc in (tiny_bert, enc_clip):
        tok = enc.tokenizer
        ids = enc.tokenize([caption])["input_ids"][0].tolist()
        assert tok.unk_token_id not in ids
        words = caption.lower().split()
        assert ids[1:-1] == [vocabulary().index(w) for w in words]
        assert tok.convert_ids_to_tokens(ids[1:-1]) == words
    # an unknown word falls back to letter pieces, still without [UNK]
    assert tiny_bert.tokenizer.tokenize("roadx") == ["road", "##x"]
    with torch.inference_mode():
        a, b = tiny_bert.encode_texts(["red roofs", "blue water"]).pooled
    assert not torch.allclose(a, b)  # different words, different features
