"""FusionConfig: everything needed to rebuild a fusion model, saved beside its weights.

Why a validated config and not keyword arguments: the published code rebuilt its model with different
settings at export time than at training time (paper bug 5); a checkpoint that carries its own config,
checked on load, cannot drift that way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from skyfuse.errors import ConfigError


def _summarise(exc: ValidationError, source: str) -> str:
    """One line naming every bad field, so the CLI can print it without a traceback."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "config"
        parts.append(f"{loc}: {err['msg']}")
    return f"{source}: invalid fusion config ({'; '.join(parts)}); fix these fields"


class FusionConfig(BaseModel):
    """Settings of a fusion model (see docs/models.md for what each one changes)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    model: str = Field(description="registered model name: dual, image, text, concat, t2i, i2t")
    image_dim: int = Field(gt=0, description="width of the image encoder's tokens")
    text_dim: int = Field(gt=0, description="width of the text encoder's tokens")
    num_classes: int = Field(gt=0, description="number of output logits")
    width: int = Field(256, gt=0, description="working width both streams are projected to")
    heads: int = Field(4, gt=0, description="attention heads; must divide width")
    levels: int = Field(2, ge=1, le=64, description="number of fusion levels")
    shared_weights: bool = Field(False, description="reuse one block's weights at every level")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout in attention, MLP and head")
    shortcut: bool = Field(True, description="feed pooled input projections to the head as well")
    mlp_ratio: float = Field(2.0, gt=0.0, description="hidden width of the MLPs / width")
    token_drop: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="fraction of real tokens hidden at random per sample in training (0 = off)",
    )
    caption_dropout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="fraction of training samples whose caption is hidden entirely, so the model"
        " also predicts from the image alone (0 = off)",
    )
    linear_path: bool = Field(
        False,
        description="add a linear map of the pooled input vectors to the logits (the probe inside"
        " the model), which the fusion branch corrects",
    )

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        from skyfuse.models.registry import MODELS

        name = value.strip().lower()
        if name not in MODELS:
            raise ValueError(f"unknown model {value!r}; known: {', '.join(MODELS)}")
        return name

    @model_validator(mode="after")
    def _heads_divide_width(self) -> FusionConfig:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        return self

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(_summarise(exc, "FusionConfig")) from None

    @property
    def mlp_hidden(self) -> int:
        """Hidden width of every MLP (at least 1)."""
        return max(1, round(self.width * self.mlp_ratio))

    # -- persistence -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> FusionConfig:
        """Validate a mapping; bad or unknown fields raise a one-line ConfigError naming `source`."""
        if not isinstance(data, dict):
            raise ConfigError(
                f"{source}: a fusion config must be a JSON object, got {type(data).__name__}"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(_summarise(exc, source)) from None
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    @classmethod
    def from_json(cls, text: str, source: str = "config") -> FusionConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{source}: not valid JSON ({exc.msg}, line {exc.lineno}); fix the file"
            ) from None
        return cls.from_dict(data, source)

    def save(self, path: Path) -> Path:
        """Write the config as JSON (atomically: a kill never leaves half a file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json() + "\n", encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path) -> FusionConfig:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(
                f"{path}: fusion config not found; pass the model bundle's config.json"
            )
        return cls.from_json(path.read_text(encoding="utf-8"), source=str(path))
