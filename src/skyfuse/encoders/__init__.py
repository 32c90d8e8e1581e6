"""Image and text encoders that return tokens, a padding mask and a pooled vector, plus the feature cache.

Attributes are imported lazily (PEP 562) so that `skyfuse.data.transforms` can use `encoders.base`
without a circular import and `import skyfuse.encoders` does not load transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from skyfuse.encoders.base import ImageEncoder, ImagePreprocess, TextEncoder, TokenBatch
    from skyfuse.encoders.cache import FeatureCache
    from skyfuse.encoders.features import FeatureSet, extract_features
    from skyfuse.encoders.registry import (
        IMAGE_ENCODERS,
        TEXT_ENCODERS,
        create_image_encoder,
        create_text_encoder,
        list_image_encoders,
        list_text_encoders,
    )

_EXPORTS = {
    "TokenBatch": "base",
    "ImageEncoder": "base",
    "TextEncoder": "base",
    "ImagePreprocess": "base",
    "create_image_encoder": "registry",
    "create_text_encoder": "registry",
    "list_image_encoders": "registry",
    "list_text_encoders": "registry",
    "IMAGE_ENCODERS": "registry",
    "TEXT_ENCODERS": "registry",
    "FeatureSet": "features",
    "extract_features": "features",
    "FeatureCache": "cache",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"skyfuse.encoders.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'skyfuse.encoders' has no attribute {name!r}")


__all__ = [
    "IMAGE_ENCODERS",
    "TEXT_ENCODERS",
    "FeatureCache",
    "FeatureSet",
    "ImageEncoder",
    "ImagePreprocess",
    "TextEncoder",
    "TokenBatch",
    "create_image_encoder",
    "create_text_encoder",
    "extract_features",
    "list_image_encoders",
    "list_text_encoders",
]
