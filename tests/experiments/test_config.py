"""Experiment documents: YAML round trip, one-line errors naming the key, flags over a file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from skyfuse.errors import ConfigError
from skyfuse.experiments.config import (
    BenchExperiment,
    Recorded,
    TrainExperiment,
    ZeroShotExperiment,
    build_experiment,
    recorded_differences,
    save_experiment,
)


def _train(tmp_path: Path) -> TrainExperiment:
    return build_experiment(
        TrainExperiment,
        overrides={
            "data.path": tmp_path / "scenes",
            "data.protocol": "aid-20",
            "seed": 3,
            "out": tmp_path / "run",
            "model.name": "concat",
            "model.width": 64,
            "training.lr": 0.02,
            "training.views": 4,
            "training.grad_clip": None,
            "training.logger": "none",
        },
    )


@pytest.mark.parametrize("kind", [TrainExperiment, BenchExperiment, ZeroShotExperiment])
def test_default_document_round_trips(kind: type, tmp_path: Path) -> None:
    exp = build_experiment(kind)
    path = save_experiment(exp, tmp_path / "config.yaml")
    assert build_experiment(kind, config_file=path) == exp


def test_yaml_round_trip_keeps_every_setting(tmp_path: Path) -> None:
    exp = _train(tmp_path)
    path = save_experiment(exp, tmp_path / "config.yaml")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# skyfuse train config")
    doc = yaml.safe_load(text)
    assert doc["kind"] == "train" and doc["seed"] == 3
    assert "seed" not in doc["training"]  # one seed, at the top
    assert doc["training"]["lr"] == 0.02 and doc["training"]["grad_clip"] is None
    back = build_experiment(TrainExperiment, config_file=path)
    assert back == exp
    assert back.training.seed == 3 and back.data.path == tmp_path / "scenes"


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = save_experiment(_train(tmp_path), tmp_path / "config.yaml")
    exp = build_experiment(
        TrainExperiment, config_file=path, overrides={"training.epochs": 2, "out": tmp_path / "b"}
    )
    assert exp.training.epochs == 2 and exp.out == tmp_path / "b"
    assert exp.training.lr == 0.02 and exp.model.name == "concat"  # the rest from the file


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"training": {"lrr": 0.1}}, "training.lrr: unknown key"),
        ({"training": {"epochs": "many"}}, "training.epochs: Input should be a valid integer"),
        ({"model": {"width": 2}}, "model.width: Input should be greater than or equal to 8"),
        ({"optimiser": {}}, "optimiser: unknown key"),
        ({"training": {"schedule": "linear"}}, "training.schedule: Input should be"),
        ({"seed": 1, "training": {"seed": 2}}, "training.seed 2 differs from seed 1"),
    ],
)
def test_bad_document_is_one_line_naming_the_key(
    tmp_path: Path, document: dict, expected: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        build_experiment(TrainExperiment, config_file=path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and expected in message
    assert "\n" not in message


def test_a_flag_is_named_by_its_label(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--epochs: Input should be greater than or equal to 1"):
        build_experiment(
            TrainExperiment,
            overrides={"training.epochs": 0},
            labels={"training.epochs": "--epochs"},
        )


def test_not_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("kind: train\ntraining:\n  lr: [0.1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"broken.yaml: line \d+ not valid YAML"):
        build_experiment(TrainExperiment, config_file=path)
    path.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="a YAML mapping"):
        build_experiment(TrainExperiment, config_file=path)


def test_another_commands_config_names_that_command(tmp_path: Path) -> None:
    path = save_experiment(build_experiment(BenchExperiment), tmp_path / "bench.yaml")
    with pytest.raises(ConfigError, match=r"a bench config .*skyfuse bench --config"):
        build_experiment(TrainExperiment, config_file=path)


def test_recorded_section_is_accepted_and_compared(tmp_path: Path) -> None:
    exp = _train(tmp_path).model_copy(
        update={"recorded": Recorded(version="0.1.0", captions_digest="a" * 64)}
    )
    back = build_experiment(TrainExperiment, config_file=save_experiment(exp, tmp_path / "c.yaml"))
    assert back.recorded is not None and back.recorded.captions_digest == "a" * 64
    assert recorded_differences(back, Recorded(captions_digest="a" * 64)) == []
    (difference,) = recorded_differences(back, Recorded(captions_digest="b" * 64))
    assert difference.startswith("captions_digest aaaa")


def test_the_documented_examples_are_valid_experiments(tmp_path: Path) -> None:
    """Every YAML example of docs/experiments.md passes the same check a user's file gets."""
    import re

    from skyfuse.experiments.config import KINDS

    text = (Path(__file__).resolve().parents[2] / "docs" / "experiments.md").read_text("utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 3
    for i, block in enumerate(blocks):
        path = tmp_path / f"example{i}.yaml"
        path.write_text(block, encoding="utf-8")
        kind = KINDS[yaml.safe_load(block)["kind"]]
        exp = build_experiment(kind, config_file=path)
        assert exp.data.path == Path("data/aid")
