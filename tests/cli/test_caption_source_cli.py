"""Issue 13, end to end: a model trained on human captions records so, and predict/serve refuse to
caption for it instead of silently using the attribute captioner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from skyfuse.cli import app
from skyfuse.serving.server import free_port
from tests.encoders import tiny_models
from tests.training.helpers import captioned_scenes

CLASSES = ["beach", "forest"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("human_e2e")
    data, caps = captioned_scenes(
        root,
        CLASSES,
        lambda cls: f"a photo with some {cls} in it",
        per_class=6,
        captions_name="rsicd_human.csv",
    )
    vit, bert = tiny_models.make_vit(root / "vit"), tiny_models.make_bert(root / "bert")
    out = root / "run"
    res = CliRunner().invoke(
        app,
        ["train", str(data), "--model", "dual", "--train", "0.5", "--out", str(out),
         "--captions", str(caps), "--image-encoder", f"hf:{vit}", "--text-encoder", f"hf:{bert}",
         "--cache-dir", str(root / "cache"), "--width", "16", "--heads", "2", "--epochs", "1"],
    )  # fmt: skip
    torch.set_num_threads(before)
    assert res.exit_code == 0, res.output
    return {"run": out, "data": data, "caps": caps, "root": root}


def test_bundle_records_the_human_caption_file(trained: dict[str, Path]) -> None:
    manifest = json.loads((trained["run"] / "model" / "bundle.json").read_text())
    src = manifest["caption_source"]
    assert src["kind"] == "files" and src["file"] == str(trained["caps"])
    assert src["id"] == "files:rsicd_human.csv" and src["format"] == "csv"


def test_predict_and_serve_refuse_without_captions(trained: dict[str, Path]) -> None:
    runner = CliRunner()
    out = trained["root"] / "preds.jsonl"
    images = trained["data"] / "beach"
    r = runner.invoke(app, ["predict", str(trained["run"]), str(images), "--out", str(out)])
    assert r.exit_code == 2 and "human or imported captions" in r.output, r.output
    assert "rsicd_human.csv" in r.output and not out.exists()
    r = runner.invoke(app, ["serve", str(trained["run"]), "--port", str(free_port())])
    assert r.exit_code == 2 and "--require-caption" in r.output, r.output
    # with the captions the model is made for, it predicts and says where they came from
    r = runner.invoke(
        app,
        ["predict", str(trained["run"]), str(trained["data"]), "--out", str(out),
         "--captions", str(trained["caps"]), "-k", "1"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(recs) == 12
    assert all(x["caption_source"] == "given" and x["caption_mismatch"] is False for x in recs)
