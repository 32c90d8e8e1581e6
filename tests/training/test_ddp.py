"""DDP for real: 2 CPU processes (gloo) through Lightning's ``ddp`` strategy, as a user runs it.

Each test starts ``python -m skyfuse ...`` in a subprocess (Lightning's launcher re-runs that command
for rank 1; inside pytest it would re-run pytest). Data: 3 synthetic classes x 10 images, tiny random
ViT / BERT encoders, class-revealing captions. A DDP run with ``--batch-size 4`` on 2 processes is
compared with one process at ``--batch-size 8`` (the same total batch and number of optimizer steps);
the tolerance on test OA is one of the 12 test images (1/12): the two see the same samples per step
in a different grouping, so their models are close but not bit-identical.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.encoders import tiny_models
from tests.training.helpers import captioned_scenes

pytestmark = pytest.mark.slow

CLASSES = ["beach", "forest", "parking_lot"]
WORDS = {"beach": "sand water", "forest": "green trees", "parking_lot": "grey cars road"}
OA_TOLERANCE = 1 / 12 + 1e-9  # one test image
RUN_FILES = {
    "checkpoints", "config.yaml", "confusion.json", "confusion.png", "curves.png", "logs",
    "metrics.json", "model", "report.md", "run.json", "split.json",
}  # fmt: skip


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ddp")
    data, caps = captioned_scenes(
        root, CLASSES, lambda cls: f"an image with {WORDS[cls]}", per_class=10
    )
    return {
        "root": root,
        "data": data,
        "caps": caps,
        "vit": tiny_models.make_vit(root / "vit"),
        "bert": tiny_models.make_bert(root / "bert"),
        "cache": root / "cache",
    }


def _env_vars(tmp: Path | None = None) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "NODE_RANK", "RANK")}
    out.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    if tmp is not None:
        out["TMPDIR"] = str(tmp)
    repo = str(Path(__file__).resolve().parents[2])
    out["PYTHONPATH"] = repo + os.pathsep + out.get("PYTHONPATH", "")
    return out


def _run(args: list[str], cwd: Path, tmp: Path | None = None) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        args, cwd=cwd, env=_env_vars(tmp), capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, f"{args}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def _train(env: dict[str, Path], out: str, extra: list[str]) -> tuple[dict[str, Any], str]:
    cmd = [
        sys.executable, "-m", "skyfuse", "train", str(env["data"]), "--captions", str(env["caps"]),
        "--image-encoder", f"hf:{env['vit']}", "--text-encoder", f"hf:{env['bert']}",
        "--cache-dir", str(env["cache"]), "--width", "16", "--heads", "2", "--train", "0.6",
        "--seed", "0", "--patience", "30", "--accelerator", "cpu", "--out", str(env["root"] / out),
        *extra,
    ]  # fmt: skip
    res = _run(cmd, env["root"])
    return json.loads((env["root"] / out / "metrics.json").read_text()), res.stdout


def _check_ddp_run(env: dict[str, Path], out: str, one: dict[str, Any], two: dict[str, Any],
                   stdout: str) -> None:  # fmt: skip
    from skyfuse.training.bundle import load_bundle
    from skyfuse.training.config import TrainConfig
    from skyfuse.training.distributed import steps_per_process
    from skyfuse.training.module import schedule_factor

    run = env["root"] / out
    assert {p.name for p in run.iterdir()} == RUN_FILES  # one run folder, no stray temp files
    assert load_bundle(run / "model").class_names == CLASSES
    assert stdout.count("test OA") == 1  # rank 1 does not report (nor evaluate, nor write)
    from skyfuse.reports.curves import read_metrics_csv

    rows = read_metrics_csv(run / "logs" / "metrics.csv")  # rank 0 logs, once per epoch
    assert [int(r["epoch"]) for r in rows] == list(range(two["training"]["epochs_run"]))
    assert two["test"]["n"] == one["test"]["n"] == 12
    s1, s2 = one["training"]["schedule"], two["training"]["schedule"]
    assert s1["world_size"] == 1 and s2["world_size"] == 2
    n_train = two["split"]["train"]
    if two.get("mode") != "finetune" and two["train_config"]["selection"] == "fixed":
        n_train += two["split"]["val"]  # the default recipe trains on train + val
    assert s2["steps_per_epoch"] == steps_per_process(n_train, 4, 2) == s1["steps_per_epoch"]
    assert s2["optimizer_steps"] == s2["steps_per_epoch"] * two["training"]["epochs_run"]
    cfg = TrainConfig(**two["train_config"])
    end = schedule_factor(cfg, s2["optimizer_steps"] / s2["steps_per_epoch"])
    assert end == pytest.approx(0.01)  # the cosine reached its end, not its middle
    assert abs(two["test"]["oa"] - one["test"]["oa"]) <= OA_TOLERANCE, (one["test"], two["test"])


def test_frozen_features_on_two_processes(env: dict[str, Path]) -> None:
    common = ["--epochs", "20", "--lr", "0.01"]
    one, _ = _train(env, "frozen-1", [*common, "--batch-size", "8", "--devices", "1"])
    two, out = _train(
        env, "frozen-2", [*common, "--batch-size", "4", "--devices", "2", "--strategy", "ddp"]
    )
    _check_ddp_run(env, "frozen-2", one, two, out)
    assert two["training"]["schedule"]["last_lr"] == pytest.approx(0.01 * 0.01)


def test_finetune_on_two_processes(env: dict[str, Path]) -> None:
    common = ["--finetune", "--workers", "0", "--no-augment", "--epochs", "6", "--lr", "0.01",
              "--encoder-lr", "1e-3"]  # fmt: skip
    one, _ = _train(env, "ft-1", [*common, "--batch-size", "8", "--devices", "1"])
    two, out = _train(
        env, "ft-2", [*common, "--batch-size", "4", "--devices", "2", "--strategy", "ddp"]
    )
    _check_ddp_run(env, "ft-2", one, two, out)
    assert two["mode"] == "finetune"


SCRIPT = """
import json, sys
from pathlib import Path
from skyfuse.captioning import load_captions
from skyfuse.data.folder import SceneFolder
from skyfuse.encoders import create_image_encoder, create_text_encoder
from skyfuse.encoders.distributed import extract_features_distributed
from skyfuse.encoders.features import extract_features
from skyfuse.training.distributed import process_rank

data, caps_file, vit, bert, cache, ref = sys.argv[1:7]
folder = SceneFolder(Path(data))
caps = load_captions(Path(caps_file), folder.root)
ie, te = create_image_encoder("hf:" + vit), create_text_encoder("hf:" + bert)
kw = dict(batch_size=4, devices=2, accelerator="cpu", strategy="ddp", num_workers=0,
          show_progress=False)
first = extract_features_distributed(folder.samples, caps, ie, te, cache_dir=None, **kw)
second = extract_features_distributed(folder.samples, caps, ie, te, cache_dir=Path(cache), **kw)
single = extract_features(folder.samples, caps, ie, te, cache_dir=Path(ref), show_progress=False)

def same(fs):
    return (fs.rels == single.rels
            and (fs.image_tokens.float() - single.image_tokens.float()).abs().max().item() < 1e-2
            and (fs.text_tokens.float() - single.text_tokens.float()).abs().max().item() < 1e-2
            and bool((fs.text_mask == single.text_mask).all()))

# one write per line (atomic on a pipe), so the two ranks' lines cannot interleave
sys.stdout.write("RESULT " + json.dumps({"rank": process_rank(), "n": len(first),
      "first": [same(first), first.stats], "second": [same(second), second.stats]}) + "\\n")
sys.stdout.flush()
"""


def _results(stdout: str) -> list[dict[str, Any]]:
    """Every ``RESULT {json}`` in the output, wherever a line starts (ranks share one pipe)."""
    decoder = json.JSONDecoder()
    rows, start = [], stdout.find("RESULT ")
    while start >= 0:
        row, end = decoder.raw_decode(stdout, start + len("RESULT "))
        rows.append(row)
        start = stdout.find("RESULT ", end)
    return rows


def test_distributed_feature_extraction_on_two_processes(
    env: dict[str, Path], tmp_path: Path
) -> None:
    script = tmp_path / "extract.py"
    script.write_text(SCRIPT)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    cache, ref = tmp_path / "cache", tmp_path / "ref"
    res = _run(
        [sys.executable, str(script), str(env["data"]), str(env["caps"]), str(env["vit"]),
         str(env["bert"]), str(cache), str(ref)],
        tmp_path, tmp,
    )  # fmt: skip
    rows = _results(res.stdout)
    assert sorted(r["rank"] for r in rows) == [0, 1]  # both ranks return the whole FeatureSet
    for r in rows:
        assert r["n"] == 30 and r["first"][0] and r["second"][0], r
    (r0,) = [r for r in rows if r["rank"] == 0]
    for call in ("first", "second"):  # every image and caption encoded once, by the two ranks
        stats = r0[call][1]
        assert (stats["image_computed"], stats["text_computed"]) == (30, 3), (call, stats)
    # the second call's shards come from both processes; nothing was encoded twice
    from safetensors import safe_open

    writers, entries = set(), 0
    for shard in (cache / "image").rglob("*.safetensors"):
        writers.add(shard.name.split("-")[1])
        with safe_open(str(shard), framework="pt") as f:
            entries += sum(1 for k in f.keys() if k.endswith(".pooled"))  # noqa: SIM118
    assert len(writers) == 2 and entries == 30
    # the shared temporary cache (first call) and the work plans are gone
    assert not [p for p in tmp.iterdir() if p.name.startswith("skyfuse-features-")]
    assert not list(cache.glob(".plan-*"))
