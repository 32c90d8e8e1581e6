"""`skyfuse predict`, `explain`, `export` (and `serve --help`) through the Typer app, in process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from skyfuse.cli import app
from skyfuse.data.synthetic import make_synthetic_dataset
from tests.inference.helpers import CLASSES, make_bundle

runner = CliRunner()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("cli") / "model")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_synthetic_dataset(
        tmp_path_factory.mktemp("scenes") / "synth", per_class=3, size=48, classes=CLASSES
    )
    (root / "forest" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return root


def _run(*args: str) -> object:
    result = runner.invoke(app, [str(a) for a in args])
    return result


def test_predict_jsonl_resume_and_captions(tmp_path: Path, bundle: Path, scenes: Path) -> None:
    out = tmp_path / "preds.jsonl"
    caps = tmp_path / "caps.jsonl"
    caps.write_text(
        json.dumps({"path": "beach/beach_0000.jpg", "caption": "sand next to the sea"}) + "\n"
    )
    r = _run("predict", bundle, scenes, "--out", out, "--captions", caps, "--top-k", "3", "-b", "5")
    assert r.exit_code == 0, r.output
    assert "12 predicted" in r.output and "1 skipped" in r.output and "broken.jpg" in r.output
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(recs) == 12 and {"path", "top_k", "caption"} <= set(recs[0])
    by_path = {rec["path"]: rec for rec in recs}
    assert by_path["beach/beach_0000.jpg"]["caption"] == "sand next to the sea"
    assert all(len(rec["top_k"]) == 3 and rec["top_k"][0]["label"] in CLASSES for rec in recs)
    assert all(rec["caption"] for rec in recs)  # the others were captioned on the fly
    r = _run("predict", bundle, scenes, "--out", out, "--top-k", "3")
    assert r.exit_code == 0 and "0 predicted, 12 already" in r.output
    assert len(out.read_text().splitlines()) == 12


def test_predict_csv_single_file(tmp_path: Path, bundle: Path, scenes: Path) -> None:
    out = tmp_path / "p.csv"
    img = scenes / "water" / "water_0001.jpg"
    r = _run("predict", bundle, img, "--out", out, "-k", "2")
    assert r.exit_code == 0, r.output
    lines = out.read_text().splitlines()
    assert lines[0] == (
        "path,caption,caption_source,caption_mismatch,error,label_1,prob_1,label_2,prob_2"
    )
    assert len(lines) == 2


def test_predict_plain_folder_finds_scene_folder_captions(
    tmp_path: Path, bundle: Path, scenes: Path
) -> None:
    """Regression: a plain folder of images with a store made on the scene folder (Class/file keys)
    used to fail with 'no class sub-folders'; it must find the captions by file name."""
    import shutil

    plain = tmp_path / "plain"
    plain.mkdir()
    for name in ("beach_0000.jpg", "beach_0001.jpg"):
        shutil.copy(scenes / "beach" / name, plain / name)
    caps = tmp_path / "caps.jsonl"
    caps.write_text(
        "".join(
            json.dumps({"path": f"beach/{n}", "caption": f"sand number {n[-5]}"}) + "\n"
            for n in ("beach_0000.jpg", "beach_0001.jpg")
        )
    )
    out = tmp_path / "plain.jsonl"
    r = _run("predict", bundle, plain, "--out", out, "--captions", caps, "-k", "2")
    assert r.exit_code == 0, r.output
    assert "2 predicted" in r.output and "0 captioned on the fly" in r.output
    by_path = {rec["path"]: rec for rec in map(json.loads, out.read_text().splitlines())}
    assert by_path["beach_0001.jpg"]["caption"] == "sand number 1"


def test_run_folder_accepted_like_evaluate(tmp_path: Path, bundle: Path, scenes: Path) -> None:
    """Regression: predict/explain/export refused the run folder that `evaluate` accepts."""
    img = scenes / "water" / "water_0001.jpg"
    r = _run("predict", bundle.parent, img, "--out", tmp_path / "p.jsonl", "-k", "2")
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--backend", "openai"], "needs --vlm-model"),
        (["--backend", "nope"], "unknown captioner"),
        (["--backend", "files"], "--captions FILE"),
        (["--device", "nope"], "not a torch device"),
        (["--device", "cuda:99"], "cuda:99"),
    ],
)
def test_bad_backend_or_device_is_one_line_and_writes_nothing(
    tmp_path: Path, bundle: Path, scenes: Path, args: list[str], words: str
) -> None:
    """Regression: these failed after creating --out (or with a torch traceback for --device)."""
    out = tmp_path / "p.jsonl"
    r = _run("predict", bundle, scenes / "water", "--out", out, *args)
    assert r.exit_code == 2 and words in r.output, r.output
    assert "Traceback" not in r.output and not out.exists()


@pytest.mark.parametrize("opset", ["3", "13", "99"])
def test_export_unsupported_opset_is_one_line(tmp_path: Path, bundle: Path, opset: str) -> None:
    """Regression: --opset 3 / 13 / 99 ended in a torch traceback mid-export."""
    r = _run("export", bundle, "--out", tmp_path / "m.onnx", "--opset", opset, "--no-encoders")
    assert r.exit_code == 2 and f"--opset {opset}" in r.output and "Traceback" not in r.output


def test_features_bad_device_is_one_line(tmp_path: Path, scenes: Path) -> None:
    caps = tmp_path / "caps.jsonl"
    caps.write_text(json.dumps({"path": "beach/beach_0000.jpg", "caption": "sand"}) + "\n")
    r = _run("features", scenes, "-c", caps, "--device", "nope", "--cache-dir", tmp_path / "c")
    assert r.exit_code == 2 and "not a torch device" in r.output, r.output


def test_serve_refuses_an_unknown_backend_before_starting(bundle: Path) -> None:
    r = _run("serve", bundle, "--backend", "nope", "--port", "1")
    assert r.exit_code == 2 and "unknown captioner" in r.output


def test_predict_errors_are_one_line(tmp_path: Path, bundle: Path, scenes: Path) -> None:
    r = _run("predict", tmp_path / "nope", scenes, "--out", tmp_path / "x.jsonl")
    assert r.exit_code == 2 and "model folder not found" in r.output and "Traceback" not in r.output
    r = _run("predict", bundle, scenes, "--out", tmp_path / "x.jsonl", "--classes", "a,b")
    assert r.exit_code == 2 and "zero-shot bundle" in r.output
    r = _run("predict", bundle, scenes, "--out", tmp_path / "x.txt")
    assert r.exit_code == 2 and ".jsonl or .csv" in r.output


def _not_blank(path: Path, min_size: tuple[int, int]) -> None:
    with Image.open(path) as im:
        assert im.size[0] >= min_size[0] and im.size[1] >= min_size[1], (path, im.size)
        px = np.asarray(im.convert("RGB"), dtype=np.float64)
    assert px.std() > 10.0, path  # real content, not one flat colour
    assert len(np.unique(px.reshape(-1, 3), axis=0)) > 50, path


def test_explain_writes_pictures(tmp_path: Path, bundle: Path, scenes: Path) -> None:
    out = tmp_path / "explain"
    r = _run("explain", bundle, scenes, "--out", out, "--examples", "2", "--limit", "40")
    assert r.exit_code == 0, r.output
    figs = sorted((out / "attention").glob("*.png"))
    assert len(figs) == 2
    for f in figs:
        _not_blank(f, (500, 300))
    _not_blank(out / "tsne.png", (500, 400))
    _not_blank(out / "confusion.png", (300, 300))
    conf = json.loads((out / "confusion.json").read_text())
    assert np.asarray(conf["matrix"]).sum() == 12
    info = json.loads((out / "explain.json").read_text())
    assert (
        info["labelled"]
        and len(info["images"]) == 12
        and info["failed"][0]["path"].endswith("broken.jpg")
    )
    # a single image: the attention figure only
    r = _run("explain", bundle, scenes / "desert" / "desert_0002.jpg", "--out", tmp_path / "one")
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "one" / "attention").glob("*.png"))) == 1
    assert not (tmp_path / "one" / "tsne.png").exists()


def test_explain_says_why_an_image_model_has_no_attention_figures(
    tmp_path: Path, scenes: Path
) -> None:
    """Regression: `--examples 2` on an `image` model silently wrote no attention figure."""
    image_only = make_bundle(tmp_path / "img" / "model", model="image")
    img = scenes / "desert" / "desert_0002.jpg"
    r = _run("explain", image_only, img, "--out", tmp_path / "ex", "--examples", "2")
    assert r.exit_code == 0, r.output
    assert "no attention figures: the image model has no cross-attention" in r.output


def test_export_cli(tmp_path: Path, bundle: Path) -> None:
    out = tmp_path / "onnx" / "m.onnx"
    r = _run("export", bundle, "--format", "onnx", "--out", out, "--no-encoders")
    assert r.exit_code == 0, r.output
    assert out.is_file() and (tmp_path / "onnx" / "m.json").is_file() and "ok" in r.output
    r = _run("export", bundle, "--format", "tflite", "--out", out)
    assert r.exit_code == 2 and "supported: onnx" in r.output


@pytest.mark.parametrize("verb", ["predict", "explain", "export", "serve"])
def test_help(verb: str) -> None:
    r = _run(verb, "--help")
    assert r.exit_code == 0 and "Usage" in r.output and len(r.output) > 400


def test_serve_cli_builds_a_loopback_server(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The verb wires limits and host into uvicorn; the server itself is run by tests/serving."""
    import uvicorn
    from fastapi.testclient import TestClient

    seen: dict[str, object] = {}

    def fake_run(self: uvicorn.Server, sockets: object = None) -> None:
        seen["host"], seen["port"], seen["app"] = (
            self.config.host,
            self.config.port,
            self.config.app,
        )

    from skyfuse.serving.server import free_port

    monkeypatch.setattr(uvicorn.Server, "run", fake_run)
    port = free_port()
    r = _run("serve", bundle, "--port", port, "--max-upload-mb", "0.01", "--max-batch", "2")
    assert r.exit_code == 0, r.output
    assert seen["host"] == "127.0.0.1" and seen["port"] == port and "warning" not in r.output
    with TestClient(seen["app"]) as c:  # type: ignore[arg-type]
        assert c.get("/classes").json()["classes"] == CLASSES
        big = c.post(
            "/predict", files={"image": ("x.png", b"\x89PNG" + b"0" * 20_000, "image/png")}
        )
        assert big.status_code == 413
    r = _run("serve", bundle, "--host", "0.0.0.0", "--port", free_port("0.0.0.0"))
    assert r.exit_code == 0 and "reachable from other machines" in r.output


def test_serve_port_in_use_is_one_line_before_loading(bundle: Path) -> None:
    """Regression: a busy port surfaced as uvicorn log lines and exit 3, after the model loaded."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = _run("serve", bundle, "--port", port)
    assert r.exit_code == 2 and f"127.0.0.1:{port}: cannot listen" in r.output, r.output
    assert "serving" not in r.output


def test_human_caption_model_refuses_at_start_up(tmp_path: Path, scenes: Path) -> None:
    """Regression (issue 13): a human-caption model silently got attribute captions."""
    human = make_bundle(tmp_path / "human", caption_source="human")
    out = tmp_path / "p.jsonl"
    r = _run("predict", human, scenes / "water", "--out", out)
    assert r.exit_code == 2 and "no captioner can reproduce" in r.output, r.output
    assert "--captions" in r.output and not out.exists()
    r = _run("predict", human, scenes / "water", "--out", out, "--captioner", "attributes")
    assert r.exit_code == 2 and "--allow-caption-mismatch" in r.output and not out.exists()
    r = _run(
        "predict",
        human,
        scenes / "water",
        "--out",
        out,
        "--captioner",
        "attributes",
        "--allow-caption-mismatch",
        "-k",
        "1",
    )
    assert r.exit_code == 0, r.output
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert recs and all(rec["caption_mismatch"] is True for rec in recs)
    assert {rec["caption_source"] for rec in recs} == {"attributes:attributes-v1"}


def test_records_say_where_each_caption_came_from(
    tmp_path: Path, bundle: Path, scenes: Path
) -> None:
    caps = tmp_path / "caps.csv"
    caps.write_text("path,caption\nwater/water_0000.jpg,dark still water\n")
    out = tmp_path / "p.jsonl"
    r = _run("predict", bundle, scenes / "water", "--out", out, "--captions", caps, "-k", "1")
    assert r.exit_code == 0, r.output
    by_path = {rec["path"]: rec for rec in map(json.loads, out.read_text().splitlines())}
    assert by_path["water_0000.jpg"]["caption_source"] == "given"
    others = [rec for key, rec in by_path.items() if key != "water_0000.jpg"]
    assert others and all(rec["caption_source"].startswith("attributes:") for rec in others)
    assert not any(rec["caption_mismatch"] for rec in by_path.values())
