"""Tiny randomly initialised Hugging Face models written to temp folders (no hub access)."""

from __future__ import annotations

import json
from pathlib import Path

WORDS = [
    "a",
    "an",
    "the",
    "of",
    "and",
    "with",
    "near",
    "many",
    "some",
    "red",
    "green",
    "blue",
    "grey",
    "roof",
    "roofs",
    "tree",
    "trees",
    "road",
    "roads",
    "river",
    "field",
    "fields",
    "building",
    "buildings",
    "car",
    "cars",
    "water",
    "sand",
    "runway",
    "plane",
]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def vocabulary() -> list[str]:
    """The tiny WordPiece vocabulary: special tokens, whole words, then letters (no duplicates)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    return list(dict.fromkeys([*SPECIAL, *WORDS, *(f"##{c}" for c in letters), *letters]))


def write_tokenizer(folder: Path) -> int:
    """A WordPiece BertTokenizerFast over a tiny vocabulary; returns the vocabulary size.

    Built from an explicit `tokenizers.Tokenizer` (saved as tokenizer.json): transformers 5 ignores the
    old ``vocab_file=`` argument and would silently tokenize every word as [UNK].
    """
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = vocabulary()
    ids = {w: i for i, w in enumerate(vocab)}
    tok = Tokenizer(WordPiece(ids, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
    )
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    ).save_pretrained(folder)
    return len(vocab)


def make_bert(folder: Path, *, max_positions: int = 64) -> Path:
    from transformers import BertConfig, BertModel

    n = write_tokenizer(folder)
    cfg = BertConfig(
        vocab_size=n,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_positions,
    )
    BertModel(cfg).save_pretrained(folder)
    return folder


def _clip_text_cfg(n: int) -> dict[str, int]:
    return dict(
        vocab_size=n,
        hidden_size=24,
        intermediate_size=48,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=16,
        eos_token_id=3,
        pad_token_id=0,
        bos_token_id=2,
        projection_dim=16,
    )


def make_clip_text(folder: Path) -> Path:
    from transformers import CLIPTextConfig, CLIPTextModel

    n = write_tokenizer(folder)
    CLIPTextModel(CLIPTextConfig(**_clip_text_cfg(n))).save_pretrained(folder)
    return folder


def write_preprocessor(folder: Path, **cfg: object) -> None:
    (folder / "preprocessor_config.json").write_text(json.dumps(cfg), encoding="utf-8")


def make_clip(folder: Path) -> Path:
    """A full CLIPModel checkpoint (both towers), like openai/clip-vit-base-patch32."""
    from transformers import CLIPConfig, CLIPModel

    n = write_tokenizer(folder)
    vision = dict(
        hidden_size=24,
        intermediate_size=48,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=16,
        projection_dim=16,
    )
    cfg = CLIPConfig(text_config=_clip_text_cfg(n), vision_config=vision, projection_dim=16)
    CLIPModel(cfg).save_pretrained(folder)
    write_preprocessor(
        folder,
        do_resize=True,
        size=32,
        do_center_crop=True,
        crop_size=32,
        resample=3,
        do_normalize=True,
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    )
    return folder


def make_vit(folder: Path) -> Path:
    from transformers import ViTConfig, ViTModel

    folder.mkdir(parents=True, exist_ok=True)
    cfg = ViTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
    )
    ViTModel(cfg).save_pretrained(folder)
    write_preprocessor(
        folder,
        do_resize=True,
        size={"height": 32, "width": 32},
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    return folder
