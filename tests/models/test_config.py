"""FusionConfig: JSON round trip and one-line ConfigErrors."""

from __future__ import annotations

from pathlib import Path

import pytest

from skyfuse.errors import ConfigError
from skyfuse.models import FusionConfig, create_model, list_models


def _cfg(**kw: object) -> FusionConfig:
    base: dict[str, object] = dict(
        model="dual", image_dim=32, text_dim=24, num_classes=5, width=16, heads=2
    )
    base.update(kw)
    return FusionConfig(**base)  # type: ignore[arg-type]


def test_registry_lists_every_model() -> None:
    assert list_models() == ["concat", "dual", "i2t", "image", "t2i", "text"]


def test_json_round_trip(tmp_path: Path) -> None:
    cfg = _cfg(levels=3, shared_weights=True, dropout=0.0, shortcut=False, mlp_ratio=1.5)
    assert FusionConfig.from_json(cfg.to_json()) == cfg
    path = cfg.save(tmp_path / "sub" / "config.json")
    assert FusionConfig.load(path) == cfg


def test_model_name_is_normalised() -> None:
    assert _cfg(model=" DUAL ").model == "dual"


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("model", "nope", "unknown model"),
        ("width", 15, "divisible"),
        ("dropout", 1.0, "dropout"),
        ("num_classes", 0, "num_classes"),
        ("levels", 0, "levels"),
    ],
)
def test_bad_values_raise_config_error(field: str, value: object, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as info:
        _cfg(**{field: value})
    assert "\n" not in str(info.value)


def test_bad_json_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(
        '{"model": "dual", "image_dim": 8, "text_dim": 8, "num_classes": 2, "colour": 1}'
    )
    with pytest.raises(ConfigError, match=r"config\.json.*colour"):
        FusionConfig.load(path)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        FusionConfig.load(path)
    with pytest.raises(ConfigError, match="not found"):
        FusionConfig.load(tmp_path / "missing.json")


def test_create_model_accepts_a_dict() -> None:
    model = create_model(_cfg().to_dict())
    assert model.config == _cfg()
