"""Fusion models: dual cross-attention and its baselines, built by name from a FusionConfig.

>>> from skyfuse.models import FusionConfig, create_model
>>> cfg = FusionConfig(model="dual", image_dim=1280, text_dim=384, num_classes=30)
>>> model = create_model(cfg)
>>> out = model(image_tokens, image_mask, text_tokens, text_mask)   # out.logits, out.fused
"""

from __future__ import annotations

from skyfuse.models import baselines, dual  # noqa: F401  (registers the built-in models)
from skyfuse.models.base import FusionModel, FusionOutput
from skyfuse.models.config import FusionConfig
from skyfuse.models.registry import MODELS, create_model, list_models, register_model

__all__ = [
    "MODELS",
    "FusionConfig",
    "FusionModel",
    "FusionOutput",
    "create_model",
    "list_models",
    "register_model",
]
