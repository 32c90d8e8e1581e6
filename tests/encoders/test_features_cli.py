"""`skyfuse features` through Typer's runner, on tiny models and a tiny scene folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from skyfuse.cli import features as features_cli
from tests.conftest import cli_app

runner = CliRunner()


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    return cli_app(features_cli)


def test_fills_then_reuses_the_cache(app, scene, vit_folder, bert_folder, tmp_path: Path) -> None:
    root, caps = scene
    args = [
        "features",
        str(root),
        "--captions",
        str(tmp_path / "captions.jsonl"),
        "--image-encoder",
        f"hf:{vit_folder}",
        "--text-encoder",
        f"hf:{bert_folder}",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--batch-size",
        "4",
        "--device",
        "cpu",
    ]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert f"{len(caps)} of {len(caps)} images encoded" in first.output
    assert f"images {len(caps)} computed / 0 reused" in first.output
    assert list((tmp_path / "cache" / "image").rglob("*.safetensors"))
    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    assert f"images 0 computed / {len(caps)} reused" in second.output


def test_bad_input_is_one_line(app, scene, tmp_path: Path) -> None:
    root, _ = scene
    result = runner.invoke(app, ["features", str(root)])
    assert result.exit_code == 2
    assert "pass --captions FILE" in result.output
    result = runner.invoke(
        app,
        [
            "features",
            str(root),
            "--captions",
            str(tmp_path / "captions.jsonl"),
            "--image-encoder",
            "resnet-9000",
        ],
    )
    assert result.exit_code == 2 and "unknown image encoder" in result.output
    assert "Traceback" not in result.output


def test_help_names_the_encoders(app) -> None:
    result = runner.invoke(app, ["features", "--help"])
    assert result.exit_code == 0
    for word in ("efficientnet-lite0", "minilm", "hf:", "openclip:", "--devices", "--cache-dir"):
        assert word in result.output
