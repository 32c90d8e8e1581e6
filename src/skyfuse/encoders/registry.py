"""Encoder registries and the `create_*` entry points.

Names are either plain (``efficientnet-lite0``, ``minilm``) or a prefix with an argument
(``hf:<hub id or folder>``, ``openclip:<arch>@<checkpoint>``); prefixes are registered as ``hf:`` etc.
Factory modules register themselves on import; `_load_builtin` imports them on first use so that
importing skyfuse stays cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from skyfuse.encoders.base import ImageEncoder, TextEncoder
from skyfuse.errors import ConfigError
from skyfuse.registry import Registry

ImageFactory = Callable[..., ImageEncoder]
TextFactory = Callable[..., TextEncoder]

IMAGE_ENCODERS: Registry[ImageFactory] = Registry("image encoder")
TEXT_ENCODERS: Registry[TextFactory] = Registry("text encoder")

_BUILTIN_MODULES = ("efficientnet", "hf_image", "hf_text", "openclip")
_loaded = False


def _load_builtin() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for name in _BUILTIN_MODULES:
            importlib.import_module(f"skyfuse.encoders.{name}")


def _split(name: str) -> tuple[str, str | None]:
    """'hf:google/vit' -> ('hf:', 'google/vit'); 'minilm' -> ('minilm', None)."""
    name = name.strip()
    if ":" in name:
        prefix, arg = name.split(":", 1)
        if not arg:
            raise ConfigError(
                f"encoder name {name!r} lacks its argument, e.g. hf:<hub id or folder>"
            )
        return prefix.lower() + ":", arg
    return name, None


def _create(registry: Registry[Any], name: str, kw: dict[str, Any]) -> Any:
    _load_builtin()
    key, arg = _split(name)
    factory = registry.get(key)
    encoder = factory(arg, **kw) if arg is not None else factory(**kw)
    # how to rebuild it: the registry name and options (ids carry hashes, not file locations)
    encoder.registry_name = name.strip()
    encoder.create_kwargs = dict(kw)
    return encoder


def create_image_encoder(name: str = "efficientnet-lite0", **kw: Any) -> ImageEncoder:
    """Build an image encoder by registry name; frozen (eval, no grad) unless ``trainable=True``."""
    return _create(IMAGE_ENCODERS, name, kw)  # type: ignore[no-any-return]


def create_text_encoder(name: str = "minilm", **kw: Any) -> TextEncoder:
    """Build a text encoder by registry name; frozen (eval, no grad) unless ``trainable=True``."""
    return _create(TEXT_ENCODERS, name, kw)  # type: ignore[no-any-return]


def list_image_encoders() -> list[str]:
    """Registered image encoder names; prefixes end with ':' (e.g. 'hf:')."""
    _load_builtin()
    return IMAGE_ENCODERS.names()


def list_text_encoders() -> list[str]:
    """Registered text encoder names; prefixes end with ':' (e.g. 'hf:')."""
    _load_builtin()
    return TEXT_ENCODERS.names()
