"""CLI: `skyfuse datasets list|info|check|synth|fetch` and `skyfuse split`, through Typer's runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from skyfuse.cli import data as data_cli
from skyfuse.data.splits import Split
from tests.conftest import cli_app

runner = CliRunner()


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    """Only this module's verbs, so these tests do not depend on the other CLI modules."""
    return cli_app(data_cli)


@pytest.fixture(scope="module")
def synth(app: typer.Typer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "synthetic scenes"
    res = runner.invoke(
        app,
        [
            "datasets",
            "synth",
            str(out),
            "--per-class",
            "6",
            "--size",
            "32",
            "--classes",
            "beach,forest,water",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "18 synthetic images" in res.output
    return out


def test_every_verb_has_help(app: typer.Typer) -> None:
    for args in (
        ["datasets", "list"],
        ["datasets", "info"],
        ["datasets", "check"],
        ["datasets", "synth"],
        ["datasets", "fetch"],
        ["split"],
    ):
        res = runner.invoke(app, [*args, "--help"])
        assert res.exit_code == 0 and "Usage" in res.output, args


def test_list_and_info(app: typer.Typer) -> None:
    res = runner.invoke(app, ["datasets", "list", "--json"])
    rows = json.loads(res.output)
    assert {r["name"] for r in rows} >= {"aid", "ucm", "whu-rs19", "nwpu-resisc45"}
    res = runner.invoke(app, ["datasets", "info", "nwpu"])
    assert res.exit_code == 0 and "NWPU-RESISC45" in res.output and "storage_tank" in res.output
    res = runner.invoke(app, ["datasets", "info", "imagenet"])
    assert res.exit_code == 2 and "unknown dataset" in res.output


def test_check_json_contract(app: typer.Typer, synth: Path) -> None:
    res = runner.invoke(app, ["datasets", "check", str(synth), "--json", "--workers", "2"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["classes"] == {"beach": 6, "forest": 6, "water": 6}
    assert report["total"] == 18 and report["corrupt"] == [] and report["synthetic"] is True
    human = runner.invoke(app, ["datasets", "check", str(synth)])
    assert (
        human.exit_code == 0 and "SYNTHETIC" in human.output and "18 usable images" in human.output
    )


def test_check_bad_input(app: typer.Typer, tmp_path: Path) -> None:
    res = runner.invoke(app, ["datasets", "check", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "does not exist" in res.output and "Traceback" not in res.output
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "broken.jpg").write_bytes(b"")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "text.jpg").write_text("hello")
    res = runner.invoke(app, ["datasets", "check", str(tmp_path), "--json"])
    assert res.exit_code == 1
    assert json.loads(res.stdout)["corrupt"] == ["only/broken.jpg", "other/text.jpg"]
    assert "not usable" in res.output


def test_split_verbs(app: typer.Typer, synth: Path, tmp_path: Path) -> None:
    out = tmp_path / "split.json"
    res = runner.invoke(
        app,
        [
            "split",
            str(synth),
            "--protocol",
            "aid-50",
            "--seed",
            "2",
            "--val",
            "0.34",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    split = Split.load(out)
    assert (len(split.train), len(split.val), len(split.test)) == (6, 3, 9)
    assert split.protocol == "aid-50" and split.seed == 2
    res = runner.invoke(app, ["split", str(synth), "--verify", str(out)])
    assert res.exit_code == 0 and "matches" in res.output
    res = runner.invoke(
        app, ["split", str(synth), "--train", "0.5", "--out", str(tmp_path / "b.json")]
    )
    assert res.exit_code == 0 and Split.load(tmp_path / "b.json").protocol is None
    res = runner.invoke(app, ["split", str(synth)])
    assert res.exit_code == 2 and "--protocol" in res.output
    res = runner.invoke(app, ["split", str(synth), "--protocol", "aid-99"])
    assert res.exit_code == 2 and "unknown split protocol" in res.output
    (synth / "beach" / "beach_0000.jpg").rename(synth / "beach" / "moved.jpg")
    try:
        res = runner.invoke(app, ["split", str(synth), "--verify", str(out)])
        assert res.exit_code == 2 and "folder changed" in res.output
    finally:
        (synth / "beach" / "moved.jpg").rename(synth / "beach" / "beach_0000.jpg")


def test_fetch_without_data_explains_manual_route(app: typer.Typer, tmp_path: Path) -> None:
    res = runner.invoke(app, ["datasets", "fetch", "aid", str(tmp_path)])
    assert res.exit_code == 2 and "captain-whu" in res.output


def test_verbs_are_on_the_main_app() -> None:
    from skyfuse.cli import app as main_app

    res = runner.invoke(main_app, ["datasets", "--help"])
    assert res.exit_code == 0 and "check" in res.output and "synth" in res.output
    assert runner.invoke(main_app, ["split", "--help"]).exit_code == 0
