"""The model registry: `register_model`, `list_models`, `create_model` (the timm pattern)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from skyfuse.registry import Registry

if TYPE_CHECKING:
    from skyfuse.models.base import FusionModel
    from skyfuse.models.config import FusionConfig

ModelFactory = Callable[["FusionConfig"], "FusionModel"]

MODELS: Registry[ModelFactory] = Registry("fusion model")


def register_model(name: str) -> Callable[[Any], Any]:
    """Class decorator: make a FusionModel subclass buildable by name from a FusionConfig."""
    return MODELS.register(name)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names, sorted (glob `pattern`, e.g. ``"*2*"``)."""
    _load_builtin()
    return MODELS.names(pattern)


def create_model(cfg: FusionConfig | dict[str, Any]) -> FusionModel:
    """Build the model a config names; a dict is validated first (ConfigError on bad fields)."""
    from skyfuse.models.config import FusionConfig

    _load_builtin()
    if not isinstance(cfg, FusionConfig):
        cfg = FusionConfig.from_dict(cfg)
    return MODELS.get(cfg.model)(cfg)


def _load_builtin() -> None:
    """Import the modules whose classes register themselves (idempotent)."""
    import skyfuse.models.baselines
    import skyfuse.models.dual  # noqa: F401
