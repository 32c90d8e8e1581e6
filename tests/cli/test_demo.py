"""`skyfuse demo` end to end, shrunk (4 images per class, 2 epochs) to stay fast."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch
from typer.testing import CliRunner

from skyfuse.cli import app


def test_demo_writes_table_models_and_plots(tmp_path: Path) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = CliRunner().invoke(
            app, ["demo", "--out", str(tmp_path), "--per-class", "4", "--epochs", "2"]
        )
    finally:
        torch.set_num_threads(before)
    assert res.exit_code == 0, res.output
    assert "oa_mean" in res.output and "done in" in res.output
    with (tmp_path / "bench.csv").open() as fh:
        models = [r["model"] for r in csv.DictReader(fh)]
    assert models[:4] == ["image", "text", "concat", "dual"]
    assert {"probe-image", "probe-text", "probe-image+text"} <= set(models)
    assert (tmp_path / "synthetic-scenes" / "SYNTHETIC.md").is_file()
    assert (tmp_path / "captions.jsonl").stat().st_size > 0
    assert (tmp_path / "confusion_dual.png").is_file()
    for m in ("image", "text", "concat", "dual"):
        assert (tmp_path / "runs" / f"{m}-s0" / "model" / "bundle.json").is_file()
    # the demo's models record their attribute captions, so predict/serve caption them alike
    manifest = json.loads((tmp_path / "runs" / "dual-s0" / "model" / "bundle.json").read_text())
    assert manifest["caption_source"]["id"].startswith("attributes:")
