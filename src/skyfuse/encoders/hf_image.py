"""Hugging Face image encoders: ViT-family models (AutoModel) and CLIP vision towers.

All output tokens are kept (CLS + patches, as the paper does with ViT-B/16: 197 x 768); pooled is the
CLS token (ViT family) or CLIP's `pooler_output`. Preprocessing (size, mean, std, resize mode) is read
from the model's own `preprocessor_config.json`, never hard-coded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from skyfuse.data.transforms import preprocess_batch
from skyfuse.encoders.base import ImagePreprocess, TokenBatch
from skyfuse.encoders.common import EncoderModule
from skyfuse.encoders.hf_text import _load
from skyfuse.encoders.hub import (
    check_weights,
    config_value,
    read_config,
    resolve_model_folder,
    weights_fingerprint,
)
from skyfuse.encoders.registry import IMAGE_ENCODERS
from skyfuse.errors import CheckpointError, ConfigError


def _side(value: Any, what: str, path: Path) -> tuple[int, str]:
    """A processor `size` / `crop_size` entry -> (pixels, resize mode)."""
    if isinstance(value, int):
        return value, "exact"
    if isinstance(value, dict):
        if "shortest_edge" in value:
            return int(value["shortest_edge"]), "shorter"
        if "height" in value and "width" in value:
            if int(value["height"]) != int(value["width"]):
                raise ConfigError(
                    f"{path}: non-square {what} {value} is not supported; use a square size"
                )
            return int(value["height"]), "exact"
    raise ConfigError(
        f"{path}: cannot read {what}={value!r}; expected height/width or shortest_edge"
    )


def read_preprocess(folder: Path) -> ImagePreprocess:
    """ImagePreprocess from a Hugging Face `preprocessor_config.json`."""
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        raise CheckpointError(
            f"{path}: missing; the image encoder needs its preprocessing config (size, image_mean,"
            " image_std); copy it from the model's hub page"
        )
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable JSON ({exc}); re-download it") from None
    size, mode = _side(cfg.get("size", 224), "size", path)
    if cfg.get("do_center_crop") and "crop_size" in cfg:
        size, _ = _side(cfg["crop_size"], "crop_size", path)
        mode = "shorter"
    if cfg.get("do_normalize", True):
        mean = tuple(float(v) for v in cfg.get("image_mean", ()))
        std = tuple(float(v) for v in cfg.get("image_std", ()))
        if len(mean) != 3 or len(std) != 3:
            raise ConfigError(f"{path}: image_mean / image_std must have 3 values each")
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    # PIL resample codes used by Hugging Face processors: 2 = bilinear, 3 = bicubic
    interpolation = "bicubic" if cfg.get("resample") == 3 else "bilinear"
    return ImagePreprocess(size, mean, std, mode, interpolation)  # type: ignore[arg-type]


class HFImageEncoder(EncoderModule):
    """A Hugging Face vision model as an `ImageEncoder` (all tokens, all-true mask, CLS pooled)."""

    _lazy_attrs = frozenset({"model"})

    def __init__(
        self,
        source: str | Path,
        *,
        trainable: bool = False,
    ) -> None:
        super().__init__()
        folder, label = resolve_model_folder(str(source))
        fingerprint = weights_fingerprint(folder)
        check_weights(folder, "image model")
        cfg = read_config(folder)
        model_type = str(cfg.get("model_type") or config_value(cfg, folder, "model_type") or "")
        self.is_clip = model_type in {"clip", "clip_vision_model"}
        if not self.is_clip and cfg.get("vision_config") is not None:
            raise ConfigError(
                f"hf:{label}: {model_type} vision-language checkpoints other than CLIP are not"
                " supported as image encoders; use a ViT-family or CLIP model"
            )
        tower = "vision_config" if model_type == "clip" else None
        self.preprocess_cfg = read_preprocess(folder)
        self.dim = int(config_value(cfg, folder, "hidden_size", tower=tower))
        self.source_folder = folder
        self.encoder_id = f"hf:{label}@{fingerprint}:{self.preprocess_cfg.describe()}"
        self._setup_weights(trainable)

    def _load_weights(self) -> None:
        from transformers import AutoModel, CLIPVisionModel

        cls = CLIPVisionModel if self.is_clip else AutoModel
        folder = self.source_folder
        self.model = _load("image model", folder, lambda: cls.from_pretrained(folder))

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return preprocess_batch(images, self.preprocess_cfg)

    def encode(self, pixels: torch.Tensor) -> TokenBatch:
        self.load_weights()
        out = self.model(pixel_values=pixels.to(self.device))
        tokens = out.last_hidden_state
        if tokens.dim() != 3:
            raise ConfigError(
                f"{self.encoder_id}: model returns a feature map, not a token sequence;"
                " use a ViT-family model"
            )
        pooled = out.pooler_output if self.is_clip else tokens[:, 0]
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return TokenBatch(tokens, mask, pooled)

    def forward(self, pixels: torch.Tensor) -> TokenBatch:
        return self.encode(pixels)


@IMAGE_ENCODERS.register("hf:")
def _hf_image(source: str, **kw: Any) -> HFImageEncoder:
    return HFImageEncoder(source, **kw)
