"""`--config`: every run folder holds config.yaml, a rerun from it gives the same numbers, flags beside
it override it, a bad document is one line, and the flags' shown defaults are the schema's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from skyfuse.cli import app
from skyfuse.cli import train as train_cli
from skyfuse.cli import zeroshot as zeroshot_cli
from skyfuse.experiments.config import (
    BenchExperiment,
    TrainExperiment,
    ZeroShotExperiment,
    to_document,
)
from tests.cli.test_train_cli import _common, _one_thread, env  # noqa: F401 (fixtures)


def _metrics(run: Path) -> dict[str, Any]:
    return json.loads((run / "metrics.json").read_text(encoding="utf-8"))


def test_rerun_from_config_yaml_gives_the_same_test_scores(env: dict[str, Path]) -> None:  # noqa: F811
    runner = CliRunner()
    first = env["root"] / "cfg-first"
    args = ["train", str(env["data"]), "--train", "0.5", "--seed", "2", "--views", "2"]
    res = runner.invoke(app, [*args, *_common(env), "--out", str(first), "--quiet"])
    assert res.exit_code == 0, res.output
    doc = yaml.safe_load((first / "config.yaml").read_text(encoding="utf-8"))
    assert doc["kind"] == "train" and doc["seed"] == 2
    assert doc["data"]["path"] == str(env["data"].resolve())
    assert doc["training"]["epochs"] == 2 and doc["training"]["views"] == 2
    assert doc["model"]["width"] == 16 and doc["model"]["name"] == "dual"
    assert doc["recorded"]["captions_digest"] and doc["recorded"]["version"]
    again = env["root"] / "cfg-again"
    res = runner.invoke(app, ["train", "--config", str(first / "config.yaml"), "--out", str(again)])
    assert res.exit_code == 0, res.output
    a, b = _metrics(first), _metrics(again)
    assert a["test"]["oa"] == b["test"]["oa"]
    assert a["test"]["confusion"] == b["test"]["confusion"]
    assert a["training"]["history"] == [] or len(a["training"]["history"]) == len(
        b["training"]["history"]
    )
    redoc = yaml.safe_load((again / "config.yaml").read_text(encoding="utf-8"))
    assert {k: v for k, v in redoc.items() if k not in ("out", "recorded")} == {
        k: v for k, v in doc.items() if k not in ("out", "recorded")
    }


def test_flags_beside_config_override_it(env: dict[str, Path]) -> None:  # noqa: F811
    runner = CliRunner()
    base = env["root"] / "cfg.yaml"
    base.write_text(
        yaml.safe_dump(
            {
                "kind": "train",
                "data": {
                    "path": str(env["data"]),
                    "captions": str(env["caps"]),
                    "train_ratio": 0.5,
                },
                "encoders": {
                    "image": f"hf:{env['vit']}",
                    "text": f"hf:{env['bert']}",
                    "cache_dir": str(env["cache"]),
                },
                "model": {"name": "concat", "width": 16, "heads": 2},
                "training": {"epochs": 3, "views": 1, "logger": "none"},
            }
        ),
        encoding="utf-8",
    )
    out = env["root"] / "cfg-override"
    res = runner.invoke(
        app, ["train", "--config", str(base), "--epochs", "1", "--out", str(out), "-q"]
    )
    assert res.exit_code == 0, res.output
    doc = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    assert doc["training"]["epochs"] == 1  # the flag
    assert doc["model"]["name"] == "concat" and doc["training"]["views"] == 1  # the file
    assert _metrics(out)["model"] == "concat"


def test_bad_config_is_one_line_before_any_work(env: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: train\ntraining:\n  epochz: 3\n", encoding="utf-8")
    out = tmp_path / "never"
    res = CliRunner().invoke(
        app, ["train", str(env["data"]), "--config", str(bad), "--out", str(out)]
    )
    assert res.exit_code == 2
    assert res.output.strip() == f"error: {bad}: training.epochz: unknown key"
    assert not out.exists()
    res = CliRunner().invoke(app, ["train", str(env["data"]), "--epochs", "0", "--out", str(out)])
    assert res.exit_code == 2
    assert "--epochs: Input should be greater than or equal to 1" in res.output
    res = CliRunner().invoke(app, ["train", "--train", "0.5"])
    assert res.exit_code == 2 and "no scene folder" in res.output


def test_bench_and_zeroshot_accept_config(env: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    doc = {"kind": "bench", "models": ["concat"], "seeds": [0], "probes": False}
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    out = tmp_path / "bench"
    res = CliRunner().invoke(
        app,
        ["bench", str(env["data"]), "--config", str(path), "--train", "0.5", "--views", "1",
         *_common(env), "--out", str(out), "-q"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    saved = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    assert saved["models"] == ["concat"] and saved["seeds"] == [0] and saved["probes"] is False
    assert saved["training"]["epochs"] == 2 and saved["fusion"]["width"] == 16
    res = CliRunner().invoke(app, ["zeroshot", "--config", str(path), "--out", str(tmp_path / "z")])
    assert res.exit_code == 2 and "a bench config" in res.output


def _shown_defaults(command: Any, keys: dict[str, str]) -> dict[str, Any]:
    group = typer.main.get_command(app)
    cmd = group.commands[command]  # type: ignore[attr-defined]
    out = {}
    for param in cmd.params:
        if param.name in keys:
            value = param.default
            out[keys[param.name]] = getattr(value, "value", value)
    return out


def _schema_value(document: dict[str, Any], dotted: str) -> Any:
    node: Any = document
    for part in dotted.split("."):
        node = node[part]
    return node


@pytest.mark.parametrize(
    ("command", "keys", "kind", "convert"),
    [
        ("train", train_cli.TRAIN_KEYS, TrainExperiment, {"training.grad_clip": lambda v: v or None}),
        ("bench", train_cli.BENCH_KEYS, BenchExperiment, {
            "seeds": lambda v: [int(s) for s in v.split(",")],
            "models": lambda v: v.split(","),
        }),
        ("zeroshot", zeroshot_cli.ZEROSHOT_KEYS, ZeroShotExperiment, {}),
    ],
)  # fmt: skip
def test_flag_defaults_are_the_schemas(command: str, keys: dict, kind: type, convert: dict) -> None:
    """Without --config the schema fills every untyped flag: --help must show the same defaults."""
    document = to_document(kind())
    document["training"].setdefault("seed", 0)
    for key, shown in _shown_defaults(command, keys).items():
        value = convert.get(key, lambda v: v)(shown)
        if key in ("data.path", "out"):
            continue
        assert _schema_value(document, key) == value, f"`skyfuse {command}` {key}"


def test_missing_logger_package_fails_before_any_work(env: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    import importlib.util

    if importlib.util.find_spec("mlflow") is not None:
        pytest.skip("mlflow is installed here")
    out = tmp_path / "never"
    res = CliRunner().invoke(
        app, ["train", str(env["data"]), "--train", "0.5", "--logger", "mlflow", "--out", str(out)]
    )
    assert res.exit_code == 2
    assert (
        res.output.strip()
        == "error: --logger mlflow needs the mlflow package: pip install 'skyfuse[mlflow]'"
    )
    assert not out.exists()
