"""open_clip checkpoints (RemoteCLIP, GeoRSCLIP, ...) from a local file: ``openclip:<arch>@<file>``.

Behind the optional ``openclip`` extra (open_clip_torch pulls torchvision and timm); open_clip is
imported only when such an encoder is created, and its absence is a one-line error with the fix.
Image tokens are the ViT's output tokens (``visual.output_tokens``); text tokens are the text
transformer's final states up to the end-of-text token, pooled like ``encode_text``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from skyfuse.data.transforms import preprocess_batch
from skyfuse.encoders.base import ImagePreprocess, TokenBatch
from skyfuse.encoders.common import EncoderModule, file_fingerprint
from skyfuse.encoders.registry import IMAGE_ENCODERS, TEXT_ENCODERS
from skyfuse.errors import CheckpointError, ConfigError


def _import_open_clip() -> Any:
    try:
        import open_clip
    except ImportError:
        raise ConfigError(
            "openclip: encoders need the optional extra; install it with"
            " `pip install 'skyfuse[openclip]'` (it brings open_clip_torch, timm and torchvision)"
        ) from None
    return open_clip


def _parse(spec: str) -> tuple[str, Path]:
    arch, sep, file = spec.partition("@")
    if not sep or not arch or not file:
        raise ConfigError(
            f"openclip:{spec}: expected openclip:<arch>@<checkpoint file>, e.g. openclip:ViT-B-32@RemoteCLIP-ViT-B-32.pt"
        )
    path = Path(file).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{path}: open_clip checkpoint not found; check the path")
    return arch, path


def _load_model(spec: str) -> tuple[Any, Any, str, str]:
    open_clip = _import_open_clip()
    arch, path = _parse(spec)
    try:
        model = open_clip.create_model(arch, pretrained=str(path))
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot load as open_clip {arch} ({exc})") from None
    return open_clip, model, arch, file_fingerprint(path)


class OpenClipImageEncoder(EncoderModule):
    """The vision tower of an open_clip ViT; tokens = CLS + patches, pooled = projected embedding."""

    def __init__(self, spec: str, *, trainable: bool = False) -> None:
        super().__init__()
        open_clip, model, arch, fp = _load_model(spec)
        self.visual = model.visual
        if not hasattr(self.visual, "output_tokens"):
            raise ConfigError(
                f"openclip:{arch}: only ViT vision towers give tokens; use a ViT arch"
            )
        self.visual.output_tokens = True
        cfg = getattr(self.visual, "preprocess_cfg", None) or {}
        size = cfg.get("size", getattr(self.visual, "image_size", 224))
        size = int(size[0] if isinstance(size, list | tuple) else size)
        mean = tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN))
        std = tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD))
        self.preprocess_cfg = ImagePreprocess(size, mean, std)  # type: ignore[arg-type]
        self.dim = int(self.visual.transformer.width)
        self.encoder_id = f"openclip:{arch}@{fp}:{self.preprocess_cfg.describe()}"
        self.freeze(not trainable)

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return preprocess_batch(images, self.preprocess_cfg)

    def encode(self, pixels: torch.Tensor) -> TokenBatch:
        pooled, patches = self.visual(pixels.to(self.device))
        tokens = patches
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return TokenBatch(tokens, mask, pooled)

    def forward(self, pixels: torch.Tensor) -> TokenBatch:
        return self.encode(pixels)


class OpenClipTextEncoder(EncoderModule):
    """The text tower of an open_clip CLIP; mask = tokens up to end-of-text, pooled = encode_text."""

    def __init__(self, spec: str, *, trainable: bool = False) -> None:
        super().__init__()
        open_clip, model, arch, fp = _load_model(spec)
        self.clip = model
        self._tokenizer = open_clip.get_tokenizer(arch)
        self.max_length = int(model.positional_embedding.shape[0])
        self.dim = int(model.transformer.width)
        self.encoder_id = f"openclip:{arch}@{fp}:len{self.max_length}"
        self.freeze(not trainable)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        ids = self._tokenizer([str(t) for t in texts])
        eot = ids.argmax(dim=-1)
        mask = torch.arange(ids.shape[1]).unsqueeze(0) <= eot.unsqueeze(1)
        return {"input_ids": ids, "attention_mask": mask}

    def encode(self, batch: dict[str, torch.Tensor]) -> TokenBatch:
        m = self.clip
        ids = batch["input_ids"].to(self.device)
        x = m.token_embedding(ids) + m.positional_embedding
        x = m.transformer(x, attn_mask=m.attn_mask)
        x = m.ln_final(x)
        eot = ids.argmax(dim=-1)
        pooled = x[torch.arange(x.shape[0], device=x.device), eot] @ m.text_projection
        return TokenBatch(x, batch["attention_mask"].to(self.device).bool(), pooled)

    def encode_texts(self, texts: Sequence[str]) -> TokenBatch:
        return self.encode(self.tokenize(texts))

    def forward(self, batch: dict[str, torch.Tensor]) -> TokenBatch:
        return self.encode(batch)


@IMAGE_ENCODERS.register("openclip:")
def _openclip_image(spec: str, **kw: Any) -> OpenClipImageEncoder:
    return OpenClipImageEncoder(spec, **kw)


@TEXT_ENCODERS.register("openclip:")
def _openclip_text(spec: str, **kw: Any) -> OpenClipTextEncoder:
    return OpenClipTextEncoder(spec, **kw)
