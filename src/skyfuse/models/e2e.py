"""EndToEndClassifier: image encoder + text encoder + fusion model in one module, for fine-tuning.

Why one module: the paper fine-tunes both encoders through the fusion, so pixels and token ids go in
and logits come out of a single differentiable graph. That is also the unit that `torch.compile`,
bf16 autocast and the optimizer see, so speed options (SDPA attention in Hugging Face encoders,
channels-last pixels, an autocast dtype) live here rather than in each training script.

Encoders are anything with the `skyfuse.encoders` protocols' ``encode`` (the registry's encoders built
with ``trainable=True``), or Hugging Face models built in memory and wrapped by `HFVisionTower` /
`HFTextTower` (benchmarks and tests build those from configs, without weights).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from skyfuse.encoders.base import ImagePreprocess, TokenBatch
from skyfuse.errors import ConfigError
from skyfuse.models.base import FusionModel, FusionOutput
from skyfuse.models.config import FusionConfig
from skyfuse.models.registry import create_model

ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2", "flash_attention_3")

#: ViT-B/16 in21k and most ViT checkpoints normalise with mean = std = 0.5.
VIT_PREPROCESS = ImagePreprocess(224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "exact")


class HFVisionTower(nn.Module):
    """A Hugging Face vision model (ViT family, CLIP vision) as an image encoder: all tokens, CLS pooled."""

    def __init__(self, model: nn.Module, preprocess: ImagePreprocess = VIT_PREPROCESS) -> None:
        super().__init__()
        self.model = model
        cfg: Any = model.config
        self.dim = int(cfg.hidden_size)
        self.preprocess_cfg = preprocess
        self.encoder_id = f"hf-config:{cfg.model_type}:{self.dim}"
        self.frozen = False

    def encode(self, pixels: Tensor) -> TokenBatch:
        out = self.model(pixel_values=pixels)
        tokens = out.last_hidden_state
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        pooled = getattr(out, "pooler_output", None)
        return TokenBatch(tokens, mask, pooled if pooled is not None else tokens[:, 0])

    def forward(self, pixels: Tensor) -> TokenBatch:
        return self.encode(pixels)


class HFTextTower(nn.Module):
    """A Hugging Face text model (CLIP text, BERT family) as a text encoder over token ids."""

    def __init__(self, model: nn.Module, max_length: int | None = None) -> None:
        super().__init__()
        self.model = model
        cfg: Any = model.config
        self.dim = int(cfg.hidden_size)
        self.max_length = int(max_length or cfg.max_position_embeddings)
        self.encoder_id = f"hf-config:{cfg.model_type}:{self.dim}"
        self.frozen = False

    def encode(self, batch: dict[str, Tensor]) -> TokenBatch:
        out = self.model(**batch)
        tokens = out.last_hidden_state
        mask = batch.get("attention_mask")
        mask = (
            torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
            if mask is None
            else mask.to(device=tokens.device, dtype=torch.bool)
        )
        pooled = getattr(out, "pooler_output", None)
        return TokenBatch(tokens, mask, pooled if pooled is not None else tokens[:, 0])

    def forward(self, batch: dict[str, Tensor]) -> TokenBatch:
        return self.encode(batch)


class EndToEndClassifier(nn.Module):
    """Pixels + tokenised captions -> `FusionOutput`, gradients flowing into both encoders.

    Args:
        image_encoder: has ``encode(pixels) -> TokenBatch`` and ``dim``.
        text_encoder: has ``encode({"input_ids", "attention_mask", ...}) -> TokenBatch`` and ``dim``.
        fusion: a `FusionModel` whose config's image_dim / text_dim match the encoders.
        image_padding: False (default) when every image token is real (ViT, CNN grids): the image mask
            is then not passed on, which spares a device-to-host check per step.
        compute_dtype: when set (e.g. ``torch.bfloat16``), forward runs under autocast of that dtype;
            leave None when the trainer already manages precision (Lightning ``bf16-mixed``).
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        text_encoder: nn.Module,
        fusion: FusionModel,
        *,
        image_padding: bool = False,
        compute_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        cfg = fusion.config
        img_dim, txt_dim = int(image_encoder.dim), int(text_encoder.dim)  # type: ignore[arg-type]
        if (cfg.image_dim, cfg.text_dim) != (img_dim, txt_dim):
            raise ConfigError(
                f"fusion config expects image/text widths {cfg.image_dim}/{cfg.text_dim} but the"
                f" encoders give {img_dim}/{txt_dim}; build the FusionConfig from the encoders' dims"
            )
        if getattr(image_encoder, "frozen", False) or getattr(text_encoder, "frozen", False):
            raise ConfigError(
                "an encoder is frozen; build it with trainable=True for end-to-end fine-tuning,"
                " or train on cached features instead"
            )
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.fusion = fusion
        self.image_padding = image_padding
        self.compute_dtype = compute_dtype

    @property
    def config(self) -> FusionConfig:
        return self.fusion.config

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        if self.compute_dtype is None or self.compute_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.compute_dtype)

    def _tokens(
        self, pixels: Tensor, text: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
        img = self.image_encoder.encode(pixels)  # type: ignore[operator]
        txt = self.text_encoder.encode(text)  # type: ignore[operator]
        return img.tokens, (img.mask if self.image_padding else None), txt.tokens, txt.mask

    def forward(
        self,
        pixels: Tensor,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        *,
        return_attention: bool = False,
        **text_inputs: Tensor,
    ) -> FusionOutput:
        """pixels (B, 3, H, W) normalised as the image encoder expects; input_ids / attention_mask
        (B, L) from the text encoder's tokenizer (extra tokenizer outputs go in `text_inputs`)."""
        text = {"input_ids": input_ids, **text_inputs}
        if attention_mask is not None:
            text["attention_mask"] = attention_mask
        with self._autocast(pixels.device):
            image_tokens, image_mask, text_tokens, text_mask = self._tokens(pixels, text)
            return self.fusion(
                image_tokens, image_mask, text_tokens, text_mask, return_attention=return_attention
            )

    def embed(
        self, pixels: Tensor, input_ids: Tensor, attention_mask: Tensor | None = None
    ) -> Tensor:
        """The fused vector (B, fused_dim), for zero-shot heads, probes and t-SNE."""
        text = {"input_ids": input_ids}
        if attention_mask is not None:
            text["attention_mask"] = attention_mask
        with self._autocast(pixels.device):
            return self.fusion.embed(*self._tokens(pixels, text))

    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.image_encoder.parameters()
        yield from self.text_encoder.parameters()

    def param_groups(
        self, *, encoder_lr: float, fusion_lr: float, weight_decay: float = 0.05
    ) -> list[dict[str, Any]]:
        """Optimizer groups: encoders and fusion get their own learning rates (fine-tuning pretrained
        encoders wants a rate ~10x lower than a fresh fusion); biases and norms get no weight decay."""
        groups: list[dict[str, Any]] = []
        for part, lr in (
            (nn.ModuleList([self.image_encoder, self.text_encoder]), encoder_lr),
            (self.fusion, fusion_lr),
        ):
            decay: list[nn.Parameter] = []
            no_decay: list[nn.Parameter] = []
            for p in part.parameters():
                if p.requires_grad:
                    (no_decay if p.ndim <= 1 else decay).append(p)
            groups.append({"params": decay, "lr": lr, "weight_decay": weight_decay})
            groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0})
        return [g for g in groups if g["params"]]


# -- speed options ----------------------------------------------------------------------------------
def set_attention(module: nn.Module, implementation: str = "sdpa") -> list[str]:
    """Switch every Hugging Face model inside `module` to an attention implementation ("sdpa" fuses
    softmax(QK^T)V into one kernel, flash attention on GPUs); returns the models changed."""
    if implementation not in ATTENTION_IMPLEMENTATIONS:
        raise ConfigError(
            f"attention implementation {implementation!r} unknown; use one of"
            f" {', '.join(ATTENTION_IMPLEMENTATIONS)}"
        )
    changed = []
    for name, sub in module.named_modules():
        setter = getattr(sub, "set_attn_implementation", None)
        config = getattr(sub, "config", None)
        if setter is None or config is None:
            continue
        if getattr(config, "_attn_implementation", None) != implementation:
            setter(implementation)
            changed.append(name or type(sub).__name__)
    return changed


def attention_implementations(module: nn.Module) -> dict[str, str]:
    """Which attention implementation each Hugging Face model inside `module` uses."""
    out = {}
    for name, sub in module.named_modules():
        config = getattr(sub, "config", None)
        if hasattr(sub, "set_attn_implementation") and config is not None:
            out[name or type(sub).__name__] = str(getattr(config, "_attn_implementation", None))
    return out


def to_channels_last(module: nn.Module) -> nn.Module:
    """Channels-last weights for the convolutions (ViT's patch embedding, CNN encoders): with
    channels-last pixels (what `GpuAugment` produces) the convolution needs no layout transpose."""
    return module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]


# -- building from Hugging Face configs (random weights; benchmarks and tests) -----------------------
def vision_model_from_config(config: Any, attn_implementation: str = "sdpa") -> nn.Module:
    """A randomly initialised HF vision model; ViT without its unused pooler (no wasted compute)."""
    from transformers import AutoModel, CLIPVisionModel, ViTModel

    if config.model_type == "vit":
        model: nn.Module = ViTModel(config, add_pooling_layer=False)
    elif config.model_type == "clip_vision_model":
        model = CLIPVisionModel(config)
    else:
        model = AutoModel.from_config(config)
    set_attention(model, attn_implementation)
    return model


def text_model_from_config(config: Any, attn_implementation: str = "sdpa") -> nn.Module:
    """A randomly initialised HF text model (CLIP text tower, BERT family)."""
    from transformers import AutoModel, CLIPTextModel

    if config.model_type == "clip_text_model":
        model: nn.Module = CLIPTextModel(config)
    else:
        model = AutoModel.from_config(config)
    set_attention(model, attn_implementation)
    return model


def build_end_to_end(
    vision_config: Any,
    text_config: Any,
    *,
    num_classes: int,
    model: str = "dual",
    attn_implementation: str = "sdpa",
    preprocess: ImagePreprocess | None = None,
    compute_dtype: torch.dtype | None = None,
    **fusion_options: Any,
) -> EndToEndClassifier:
    """An `EndToEndClassifier` from Hugging Face configs (e.g. ``ViTConfig()`` + ``CLIPTextConfig()``
    for the paper's ViT-B/16 + CLIP text) and fusion options (width, heads, levels, ...)."""
    size = int(getattr(vision_config, "image_size", 224))
    pre = preprocess or ImagePreprocess(size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "exact")
    image = HFVisionTower(vision_model_from_config(vision_config, attn_implementation), pre)
    text = HFTextTower(text_model_from_config(text_config, attn_implementation))
    cfg = FusionConfig(
        model=model,
        image_dim=image.dim,
        text_dim=text.dim,
        num_classes=num_classes,
        **fusion_options,
    )
    return EndToEndClassifier(image, text, create_model(cfg), compute_dtype=compute_dtype)


__all__ = [
    "ATTENTION_IMPLEMENTATIONS",
    "VIT_PREPROCESS",
    "EndToEndClassifier",
    "HFTextTower",
    "HFVisionTower",
    "attention_implementations",
    "build_end_to_end",
    "set_attention",
    "text_model_from_config",
    "to_channels_last",
    "vision_model_from_config",
]
