"""Run folders cannot mix runs: fingerprints, resume only on an exact match, --force, atomic markers.

Also the single-process side of DDP correctness: per-process step counts, ``devices="auto"``, and
`rank_zero_result` without a process group.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from skyfuse.data.splits import Split
from skyfuse.errors import ConfigError
from skyfuse.training.config import TrainConfig
from skyfuse.training.data import TensorBatches
from skyfuse.training.distributed import (
    finetune_strategy,
    process_rank,
    rank_zero_result,
    steps_per_process,
    trainer_devices,
)
from skyfuse.training.runfolder import (
    RunMismatchError,
    differences,
    open_run,
    read_fingerprint,
    run_fingerprint,
)
from tests.training.helpers import toy_set


class Features:
    """A FeatureSet look-alike over a toy TensorSet (rels c<label>/<i>.png)."""

    def __init__(self, n: int = 48) -> None:
        s = toy_set(n, 0)
        self.rels = s.rels
        self.image_tokens, self.image_mask = s.image_tokens, s.image_mask
        self.text_tokens, self.text_mask = s.text_tokens, s.text_mask


def _split(features: Features, seed: int) -> Split:
    import random

    rels = list(features.rels)
    random.Random(seed).shuffle(rels)
    return Split(
        classes=["c0", "c1", "c2"],
        train=rels[:30],
        val=rels[30:36],
        test=rels[36:],
        seed=seed,
        protocol=None,
        fingerprint="folder-fp",
    )


def _train(features: Features, out: Path, seed: int, **kw: Any) -> dict[str, Any]:
    from skyfuse.training.run import run_training

    settings: dict[str, Any] = {"epochs": kw.pop("epochs", 2), "batch_size": 16, "seed": seed}
    if "selection" in TrainConfig.model_fields:  # the select phase (val), whatever the default
        settings["selection"] = "val"
    cfg = TrainConfig(**settings, accelerator="cpu")
    return run_training(
        features, _split(features, seed), model="concat", cfg=cfg, out_dir=out,
        image_encoder="img@1", text_encoder="txt@1", fusion={"width": 16, "heads": 2},
        save_model=False, plots=False, **kw,
    )  # fmt: skip


def test_interrupted_run_resumes_only_with_the_same_fingerprint(tmp_path: Path) -> None:
    feats = Features()
    out = tmp_path / "run"
    first = _train(feats, out, seed=0, captions_digest="caps-a")
    fp = read_fingerprint(out)
    assert fp is not None and fp["train_config"]["seed"] == 0 and fp["captions"] == "caps-a"
    assert "devices" not in fp["train_config"]  # where a run executes is not what it computes
    (out / "metrics.json").unlink()  # a run killed before its end: checkpoints and run.json stay
    assert (out / "checkpoints" / "select" / "last.ckpt").is_file()

    # seed 1 into the seed-0 folder used to resume seed 0's checkpoints on seed 1's split
    with pytest.raises(RunMismatchError) as err:
        _train(feats, out, seed=1, captions_digest="caps-a")
    msg = str(err.value)
    assert "\n" not in msg and str(out) in msg and "--force" in msg
    assert "train_config.seed: 0 -> 1" in msg and "split:" in msg
    with pytest.raises(RunMismatchError, match=r"captions: caps-a -> caps-b"):
        _train(feats, out, seed=0, captions_digest="caps-b")
    with pytest.raises(RunMismatchError, match=r"train_config.epochs: 2 -> 3"):
        _train(feats, out, seed=0, captions_digest="caps-a", epochs=3)
    assert not (out / "metrics.json").exists()

    # the same run resumes and finishes with the same model
    again = _train(feats, out, seed=0, captions_digest="caps-a")
    assert again["test"]["confusion"] == first["test"]["confusion"]
    with pytest.raises(ConfigError, match="holds a finished run"):
        _train(feats, out, seed=0, captions_digest="caps-a")
    # force starts afresh with the new fingerprint
    forced = _train(feats, out, seed=1, captions_digest="caps-a", force=True)
    assert forced["seed"] == 1 and read_fingerprint(out)["train_config"]["seed"] == 1  # type: ignore[index]
    assert json.loads((out / "metrics.json").read_text())["seed"] == 1


def test_a_run_without_fingerprint_is_not_resumed(tmp_path: Path) -> None:
    out = tmp_path / "old"
    (out / "checkpoints" / "select").mkdir(parents=True)
    (out / "checkpoints" / "select" / "last.ckpt").write_bytes(b"from an older skyfuse")
    with pytest.raises(RunMismatchError, match=r"without a fingerprint .*--force"):
        _train(Features(), out, seed=0)
    assert _train(Features(), out, seed=0, force=True)["seed"] == 0


def test_fingerprint_names_what_differs() -> None:
    feats = Features()
    a = run_fingerprint(kind="features", model="dual", split=_split(feats, 0), encoders=["i", "t"],
                        train_config=TrainConfig(seed=0, devices="2").model_dump(mode="json"))  # fmt: skip
    b = run_fingerprint(kind="features", model="dual", split=_split(feats, 0), encoders=["i", "t2"],
                        train_config=TrainConfig(seed=0, devices="auto").model_dump(mode="json"))  # fmt: skip
    assert differences(a, b) == ['encoders: ["i", "t"] -> ["i", "t2"]']
    assert differences(a, a) == []


def test_open_run_states(tmp_path: Path) -> None:
    fp = {"format": 1, "model": "x"}
    assert open_run(tmp_path / "r", fp) == "new"
    assert open_run(tmp_path / "r", fp) == "resume"
    (tmp_path / "r" / "metrics.json").write_text("{}")
    assert open_run(tmp_path / "r", fp) == "done"
    with pytest.raises(RunMismatchError, match=r"model: x -> y"):
        open_run(tmp_path / "r", {"format": 1, "model": "y"})
    assert open_run(tmp_path / "r", {"format": 1, "model": "y"}, force=True) == "new"
    assert not (tmp_path / "r" / "metrics.json").exists()


def test_ddp_workers_never_touch_the_run_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "r"
    open_run(out, {"model": "x"})
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "last.ckpt").write_bytes(b"rank 0's")
    monkeypatch.setenv("LOCAL_RANK", "1")  # as Lightning's launcher starts rank 1
    assert process_rank() == 1
    # a worker re-running `train --force` must not delete what rank 0 is writing
    assert open_run(out, {"model": "x"}, force=True) == "resume"
    assert (out / "checkpoints" / "last.ckpt").is_file()


def test_selection_marker_is_written_atomically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    replace = os.replace

    def killed(src: Any, dst: Any) -> None:
        if Path(dst).name == "done.json":
            raise KeyboardInterrupt  # the process dies while the marker is being written
        replace(src, dst)

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        _train(Features(), tmp_path / "run", seed=0)
    select = tmp_path / "run" / "checkpoints" / "select"
    assert (select / "best.safetensors").is_file()
    assert not (select / "done.json").exists()  # no marker, so a rerun redoes the selection
    assert not list(select.glob(".done.json*"))  # and no temp file is left behind


def test_steps_per_process_match_the_batches_each_rank_sees() -> None:
    data = toy_set(37, 0)
    for world in (1, 2, 3, 4):
        for bs in (1, 4, 8, 64):
            for rank in range(world):
                batches = TensorBatches(data, bs, shuffle=True, rank=rank, world_size=world)
                assert len(batches) == steps_per_process(len(data), bs, world), (world, bs)


def test_schedule_spans_the_run_and_is_recorded(tmp_path: Path) -> None:
    from skyfuse.training.module import schedule_factor

    res = _train(Features(), tmp_path / "run", seed=0, epochs=3)
    sched = res["training"]["schedule"]
    assert sched["world_size"] == 1 and sched["steps_per_epoch"] == 2  # 30 train images, batch 16
    assert sched["optimizer_steps"] == 2 * res["training"]["epochs_run"]
    cfg = TrainConfig(**res["train_config"])
    want = cfg.lr * schedule_factor(cfg, sched["optimizer_steps"] / sched["steps_per_epoch"])
    assert sched["last_lr"] == pytest.approx(want)


def test_devices_auto_is_one_device(monkeypatch: pytest.MonkeyPatch) -> None:
    import skyfuse.training.fit as fit
    import skyfuse.training.loop as loop

    assert trainer_devices(TrainConfig(devices="auto")) == 1
    assert trainer_devices(TrainConfig(devices="2")) == 2
    assert trainer_devices(TrainConfig(devices="0,1")) == [0, 1]
    seen: dict[str, Any] = {}

    def capture(cfg: TrainConfig, **kwargs: Any) -> Any:
        seen.update(kwargs)
        raise RuntimeError("captured")

    monkeypatch.setattr(loop, "make_trainer", capture)
    with pytest.raises(RuntimeError, match="captured"):
        fit.fit_phase(
            __import__("torch").nn.Linear(1, 1), toy_set(8, 0), None, TrainConfig(epochs=1)
        )
    assert seen["devices"] == 1  # not Lightning's "auto" (every GPU of the machine, DDP)


def test_rank_zero_result_without_a_process_group() -> None:
    assert rank_zero_result(lambda: {"test": {"oa": 1.0}}) == {"test": {"oa": 1.0}}
    with pytest.raises(ValueError, match="boom"):
        rank_zero_result(lambda: (_ for _ in ()).throw(ValueError("boom")))
    assert finetune_strategy("ddp") == "ddp_find_unused_parameters_true"
    assert finetune_strategy("auto") == "auto"
