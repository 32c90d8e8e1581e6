"""`skyfuse train / evaluate / bench` end to end on a tiny synthetic folder with tiny random encoders."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from skyfuse.cli import app
from tests.encoders import tiny_models
from tests.training.helpers import captioned_scenes

CLASSES = ["beach", "forest", "parking_lot"]
WORDS = {"beach": "sand water", "forest": "green trees", "parking_lot": "grey cars road"}


@pytest.fixture(autouse=True)
def _one_thread():  # type: ignore[no-untyped-def]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("train_cli")
    data, caps = captioned_scenes(
        root, CLASSES, lambda cls: f"an image with {WORDS[cls]}", per_class=8
    )
    return {
        "data": data,
        "caps": caps,
        "vit": tiny_models.make_vit(root / "vit"),
        "bert": tiny_models.make_bert(root / "bert"),
        "cache": root / "cache",
        "root": root,
    }


def _common(env: dict[str, Path]) -> list[str]:
    return [
        "--captions", str(env["caps"]),
        "--image-encoder", f"hf:{env['vit']}",
        "--text-encoder", f"hf:{env['bert']}",
        "--cache-dir", str(env["cache"]),
        "--width", "16", "--heads", "2", "--epochs", "2",
    ]  # fmt: skip


def test_train_evaluate_and_refuse_rerun(env: dict[str, Path]) -> None:
    runner = CliRunner()
    out = env["root"] / "run"
    args = [
        "train",
        str(env["data"]),
        "--model",
        "dual",
        "--train",
        "0.5",
        "--seed",
        "1",
        "--out",
        str(out),
    ]
    res = runner.invoke(app, [*args, *_common(env)])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["test"]["oa"] <= 1.0
    assert {"oa", "aa", "kappa", "per_class", "confusion"} <= set(metrics["test"])
    assert metrics["split"]["test"] == 12 and metrics["seed"] == 1
    for name in ("report.md", "confusion.png", "confusion.json", "split.json", "model/bundle.json",
                 "model/model.safetensors"):  # fmt: skip
        assert (out / name).is_file(), name
    assert "test OA" in res.output

    again = runner.invoke(app, [*args, *_common(env)])
    assert again.exit_code == 2 and "finished run" in again.output

    ev = runner.invoke(
        app,
        ["evaluate", str(out), str(env["data"]), "--captions", str(env["caps"]),
         "--cache-dir", str(env["cache"]), "--out", str(env["root"] / "eval")],
    )  # fmt: skip
    assert ev.exit_code == 0, ev.output
    scored = json.loads((env["root"] / "eval" / "metrics.json").read_text())
    assert scored["test"]["oa"] == pytest.approx(metrics["test"]["oa"])
    assert scored["test"]["confusion"] == metrics["test"]["confusion"]

    # without --captions, evaluate reuses the captions file the run recorded
    assert metrics["captions"] == str(env["caps"].resolve())
    plain = runner.invoke(
        app, ["evaluate", str(out), str(env["data"]), "--cache-dir", str(env["cache"])]
    )
    assert plain.exit_code == 0, plain.output
    assert f"OA {100 * metrics['test']['oa']:.2f} %" in plain.output
    # the model/ folder itself: split.json and the recorded captions come from the run folder
    inner = runner.invoke(
        app, ["evaluate", str(out / "model"), str(env["data"]), "--cache-dir", str(env["cache"])]
    )
    assert inner.exit_code == 0, inner.output
    assert f"OA {100 * metrics['test']['oa']:.2f} %" in inner.output
    partial = (
        env["root"] / "partial.csv"
    )  # captions for one class only: 8 of 12 test images skipped
    rows = env["caps"].read_text().splitlines()
    partial.write_text(
        "\n".join([rows[0], *[r for r in rows[1:] if r.startswith("beach/")]]) + "\n"
    )
    warned = runner.invoke(
        app,
        [
            "evaluate",
            str(out),
            str(env["data"]),
            "-c",
            str(partial),
            "--cache-dir",
            str(env["cache"]),
        ],
    )
    assert warned.exit_code == 0, warned.output
    assert "8 of 12 image(s) of --part test were skipped" in " ".join(warned.output.split())
    assert "nan" not in warned.output
    bad = runner.invoke(app, ["evaluate", str(out), str(env["data"]), "--part", "nope"])
    assert bad.exit_code == 2 and "--part nope: use test, val, train, trainval or all" in bad.output


def test_bench_table_with_probes(env: dict[str, Path]) -> None:
    out = env["root"] / "bench"
    res = CliRunner().invoke(
        app,
        ["bench", str(env["data"]), "--models", "image,concat", "--train", "0.5", "--seeds", "0,1",
         "--out", str(out), *_common(env)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "oa_mean" in res.output and "oa_std" in res.output
    with (out / "bench.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["model"] for r in rows] == [
        "image",
        "concat",
        "probe-image",
        "probe-text",
        "probe-image+text",
    ]
    assert all(r["runs"] == "2" for r in rows)
    assert all(0.0 <= float(r["oa_mean"]) <= 100.0 for r in rows)
    assert len(list((out / "runs").glob("*/metrics.json"))) == 10


def test_bench_no_probes_and_token_drop(env: dict[str, Path]) -> None:
    out = env["root"] / "bench-noprobes"
    res = CliRunner().invoke(
        app,
        ["bench", str(env["data"]), "--models", "dual", "--train", "0.5", "--seeds", "0",
         "--no-probes", "--token-drop", "0.3", "--epochs", "2", "--out", str(out), *_common(env)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    with (out / "bench.csv").open() as fh:
        assert [r["model"] for r in csv.DictReader(fh)] == ["dual"]
    (metrics,) = (out / "runs").glob("*/metrics.json")
    assert json.loads(metrics.read_text())["fusion_config"]["token_drop"] == 0.3


def test_bad_inputs_are_one_line(env: dict[str, Path]) -> None:
    runner = CliRunner()
    res = runner.invoke(
        app, ["train", str(env["data"]), "--train", "0.5", "--out", str(env["root"] / "x")]
    )
    assert res.exit_code == 2 and "--captions" in res.output and "Traceback" not in res.output
    res = runner.invoke(
        app, ["train", str(env["data"]), "--model", "nope", "--train", "0.5", "--out", str(env["root"] / "y"),
              *_common(env)],
    )  # fmt: skip
    assert res.exit_code == 2 and "--model nope: unknown; use one of concat, dual" in res.output
    res = runner.invoke(app, ["evaluate", str(env["root"] / "missing"), str(env["data"])])
    assert res.exit_code == 2 and "not found" in res.output
    res = runner.invoke(app, ["bench", str(env["data"]), "--captions", str(env["caps"]), "--seeds", "a,b",
                              "--train", "0.5"])  # fmt: skip
    assert res.exit_code == 2 and "--seeds" in res.output
    cache = env["root"] / "never-filled"
    res = runner.invoke(app, ["bench", str(env["data"]), "--captions", str(env["caps"]), "--models",
                              "dual,nope", "--train", "0.5", "--cache-dir", str(cache)])  # fmt: skip
    assert res.exit_code == 2 and "--model nope: unknown; use one of concat, dual" in res.output
    assert not cache.exists()  # refused before any feature extraction


def test_help_names_real_verbs_and_parts() -> None:
    runner = CliRunner()
    train_help = " ".join(runner.invoke(app, ["train", "--help"]).output.split())
    assert "skyfuse data split" not in train_help and "skyfuse split" in train_help
    eval_help = " ".join(runner.invoke(app, ["evaluate", "--help"]).output.split())
    assert "trainval" in eval_help and "all" in eval_help


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_gpu_accelerator_without_gpu_is_one_line(env: dict[str, Path]) -> None:
    res = CliRunner().invoke(
        app,
        ["train", str(env["data"]), "--train", "0.5", "--accelerator", "gpu", "--out",
         str(env["root"] / "gpu"), *_common(env)],
    )  # fmt: skip
    assert res.exit_code == 2, res.output
    assert "--accelerator gpu" in res.output and "use --accelerator cpu" in res.output
    assert "Traceback" not in res.output


def test_interrupted_train_says_how_to_resume(
    env: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from skyfuse.training import run as run_mod
    from skyfuse.training.fit import TrainingInterrupted

    def stop(*args: object, **kwargs: object) -> None:
        raise TrainingInterrupted

    monkeypatch.setattr(run_mod, "run_training", stop)
    res = CliRunner().invoke(
        app,
        [
            "train",
            str(env["data"]),
            "--train",
            "0.5",
            "--out",
            str(env["root"] / "intr"),
            *_common(env),
        ],
    )
    assert res.exit_code == 130, res.output
    assert "interrupted; rerun the same command to resume" in res.output


def test_train_resumes_only_the_same_run(env: dict[str, Path]) -> None:
    """A killed seed-0 run is not resumed by a seed-1 command into the same folder (issue 13)."""
    runner = CliRunner()
    out = env["root"] / "fp-run"
    base = ["train", str(env["data"]), "--model", "concat", "--train", "0.5", "--out", str(out)]
    res = runner.invoke(app, [*base, "--seed", "0", *_common(env)])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "run.json").read_text())["fingerprint"]["train_config"]["seed"] == 0
    (out / "metrics.json").unlink()  # as if killed before the end: checkpoints + run.json remain
    other = runner.invoke(app, [*base, "--seed", "1", *_common(env)])
    assert other.exit_code == 2, other.output
    line = " ".join(other.output.split())
    assert "holds a different run" in line and "train_config.seed: 0 -> 1" in line
    assert "--force" in line and "Traceback" not in other.output
    assert not (out / "metrics.json").exists()
    assert json.loads((out / "split.json").read_text())["seed"] == 0  # the record stays seed 0's
    forced = runner.invoke(app, [*base, "--seed", "1", "--force", *_common(env)])
    assert forced.exit_code == 0, forced.output
    assert json.loads((out / "metrics.json").read_text())["seed"] == 1
    assert json.loads((out / "split.json").read_text())["seed"] == 1


def test_bench_skips_only_matching_runs(env: dict[str, Path]) -> None:
    runner = CliRunner()
    out = env["root"] / "fp-bench"
    args = ["bench", str(env["data"]), "--models", "concat", "--train", "0.5", "--seeds", "0",
            "--no-probes", "--out", str(out), *_common(env)]  # fmt: skip
    assert runner.invoke(app, args).exit_code == 0
    metrics = out / "runs" / "concat-s0" / "metrics.json"
    stamp = metrics.stat().st_mtime_ns
    assert runner.invoke(app, args).exit_code == 0
    assert metrics.stat().st_mtime_ns == stamp  # same settings: skipped, not retrained
    changed = runner.invoke(app, [*args, "--epochs", "3"])
    assert changed.exit_code == 2, changed.output
    assert "train_config.epochs: 2 -> 3" in " ".join(changed.output.split())
    forced = runner.invoke(app, [*args, "--epochs", "3", "--force"])
    assert forced.exit_code == 0, forced.output
    assert json.loads(metrics.read_text())["train_config"]["epochs"] == 3


def test_train_with_caption_dropout_records_it_and_the_recipe(env: dict[str, Path]) -> None:
    """--caption-dropout reaches the bundle's config (what predict/serve read for image-only answers);
    the default recipe's settings are recorded with the run."""
    from skyfuse.inference.predictor import supports_image_only
    from skyfuse.training.bundle import load_bundle

    out = env["root"] / "capdrop"
    args = [
        "train",
        str(env["data"]),
        "--train",
        "0.5",
        "--caption-dropout",
        "0.3",
        "--out",
        str(out),
    ]
    res = CliRunner().invoke(app, [*args, *_common(env)])
    assert res.exit_code == 0, res.output
    bundle = load_bundle(out / "model")
    assert bundle.config.caption_dropout == 0.3 and bundle.config.linear_path
    assert supports_image_only(bundle.model, bundle.config)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_config"]["views"] == 8 and metrics["train_config"]["selection"] == "fixed"
    assert set(metrics["test"]["attention_entropy"]) == {"text->image", "image->text"}
    assert "8 dihedral views" in (out / "report.md").read_text()
