"""Up-front checks of a zero-shot run's settings and output folder.

Why: a run extracts features (minutes) before it trains anything, so a typo in the model name or an
output path that is a file must fail at once, with one short line, not after the expensive part.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from skyfuse.errors import BadInputError, ConfigError
from skyfuse.models import FusionConfig, list_models

SOURCE = "zero-shot fusion settings"


def fusion_config(data: Mapping[str, Any]) -> FusionConfig:
    """A validated FusionConfig; bad fields give one flat line (no nested pydantic summary)."""
    try:
        return FusionConfig(**data)
    except ConfigError as exc:
        raise ConfigError(f"{SOURCE}: {str(exc).removeprefix('FusionConfig: ')}") from None
    except TypeError as exc:  # e.g. a non-string key
        raise ConfigError(f"{SOURCE}: {exc}") from None


def check_model_name(model: str) -> None:
    """Fail with the list of registered fusion models when `model` is not one of them."""
    names = list_models()
    if model not in names:
        raise ConfigError(f"--model {model}: unknown; use one of {', '.join(names)}")


def check_fusion_settings(model: str, fusion: Mapping[str, Any]) -> None:
    """Validate the model name and fusion fields with placeholder encoder widths (real ones come later)."""
    check_model_name(model)
    fusion_config({**fusion, "model": model, "image_dim": 1, "text_dim": 1, "num_classes": 1})


def check_out_dir(out: str | Path) -> Path:
    """Create the output folder now (or confirm it is a writable folder) and return it."""
    path = Path(out)
    for part in (path, *path.parents):
        if part.exists() and not part.is_dir():
            raise BadInputError(f"{part}: is a file, not a folder; choose another --out folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInputError(
            f"{path}: cannot create the output folder ({exc.strerror}); choose another --out"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise BadInputError(f"{path}: output folder is not writable; choose another --out")
    return path
