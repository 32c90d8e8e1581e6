"""The one training loop: per-epoch logs and curves of a run folder, exact rows after a resume,
logger errors, and every trainer (features, fine-tuning, zero-shot head) built by `build_loop`."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from skyfuse.errors import ConfigError
from skyfuse.models import FusionConfig, create_model
from skyfuse.reports.curves import plot_curves, read_metrics_csv, run_curves
from skyfuse.training import fit as fit_mod
from skyfuse.training import loop as loop_mod
from skyfuse.training.config import TrainConfig
from skyfuse.training.fit import fit_phase
from tests.training.helpers import toy_set
from tests.training.test_runfolder import Features, _split

PNG = b"\x89PNG\r\n\x1a\n"
COLUMNS = {"epoch", "step", "seconds", "lr", "train_loss", "train_acc", "val_loss", "val_acc"}


def _run(out: Path, **settings: Any) -> dict[str, Any]:
    from skyfuse.training.run import run_training

    cfg = TrainConfig(**{"epochs": 3, "batch_size": 16, "accelerator": "cpu", **settings})
    return run_training(
        Features(), _split(Features(), 0), model="concat", cfg=cfg, out_dir=out,
        image_encoder="img@1", text_encoder="txt@1", fusion={"width": 16, "heads": 2},
        save_model=False,
    )  # fmt: skip


def _model() -> torch.nn.Module:
    cfg = FusionConfig(
        model="dual", image_dim=16, text_dim=8, num_classes=3, width=16, heads=2, levels=1,
        dropout=0.0,
    )  # fmt: skip
    return create_model(cfg)


def test_run_folder_logs_one_row_per_epoch_and_draws_curves(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = _run(out, selection="val", patience=10)
    rows = read_metrics_csv(out / "logs" / "metrics.csv")
    assert [r["epoch"] for r in rows] == [0.0, 1.0, 2.0]  # one row per epoch, not per step
    assert set(rows[0]) == COLUMNS
    assert all(r["seconds"] > 0 and r["lr"] > 0 and 0 <= r["train_acc"] <= 1 for r in rows)
    history = result["training"]["history"]
    for row, kept in zip(rows, history, strict=True):  # the CSV holds what metrics.json holds
        assert row["val_loss"] == pytest.approx(kept["val_loss"])
        assert row["train_acc"] == pytest.approx(kept["train_acc"])
    assert (out / "curves.png").read_bytes()[:8] == PNG
    assert json.loads((out / "metrics.json").read_text())["training"]["history"][0]["lr"] > 0


def test_fixed_schedule_logs_without_val_and_marks_the_last_epoch(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = _run(out, selection="fixed")
    rows = read_metrics_csv(out / "logs" / "metrics.csv")
    assert len(rows) == 3 and "val_loss" not in rows[0] and "train_loss" in rows[0]
    curve, chosen, refit = run_curves(result)
    assert len(curve) == 3 and chosen == 2 and refit is None
    assert (out / "curves.png").read_bytes()[:8] == PNG


def test_refit_logs_its_own_curve(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = _run(out, selection="val", refit=True, patience=1)
    n = result["training"]["refit_epochs"]
    assert len(read_metrics_csv(out / "logs" / "refit" / "metrics.csv")) == n
    assert len(read_metrics_csv(out / "logs" / "metrics.csv")) == result["training"]["epochs_run"]
    curve, chosen, refit = run_curves(result)
    assert len(curve) == result["training"]["epochs_run"]
    assert chosen == n - 1 and refit is not None and len(refit) == n


def test_logger_none_leaves_no_logs(tmp_path: Path) -> None:
    out = tmp_path / "run"
    _run(out, logger="none")
    assert not (out / "logs").exists()
    assert (out / "curves.png").is_file()  # the picture comes from metrics.json, not the log


@pytest.mark.parametrize("kind", ["tensorboard", "mlflow", "wandb"])
def test_missing_logger_package_is_a_one_line_config_error(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loop_mod, "_importable", lambda package: False)
    with pytest.raises(ConfigError) as err:
        _run(tmp_path / "run", logger=kind)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"--logger {kind} needs the ")
    assert f"pip install 'skyfuse[{kind}]'" in msg


class _Kill(Callback):
    """Raises at the end of epoch 1: before History writes its row ("before"), or after the row is
    written but before ModelCheckpoint saves the epoch ("after"; Lightning runs checkpoints last)."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == 1:
            raise RuntimeError("killed")


@pytest.mark.parametrize("where", ["before", "after"])
def test_resume_keeps_one_row_per_epoch(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train, val = toy_set(64, 0), toy_set(12, 1)
    cfg = TrainConfig(epochs=4, batch_size=16, patience=10, seed=2, selection="val")
    torch.manual_seed(0)
    ref = fit_phase(_model(), train, val, cfg, run_dir=tmp_path / "ref")
    real = fit_mod.build_loop

    def killing(*args: Any, **kwargs: Any) -> Any:
        loop = real(*args, **kwargs)
        if where == "before":
            loop.trainer.callbacks.insert(0, _Kill())
        else:
            loop.trainer.callbacks.append(_Kill())
        return loop

    monkeypatch.setattr(fit_mod, "build_loop", killing)
    run = tmp_path / "run"
    torch.manual_seed(0)
    with pytest.raises(RuntimeError, match="killed"):
        fit_phase(_model(), train, val, cfg, workdir=run / "checkpoints", run_dir=run)
    written = read_metrics_csv(run / "logs" / "metrics.csv")
    assert len(written) == (1 if where == "before" else 2)  # the killed epoch's row may be there
    monkeypatch.setattr(fit_mod, "build_loop", real)
    torch.manual_seed(123)
    fit_phase(_model(), train, val, cfg, workdir=run / "checkpoints", run_dir=run)
    rows = read_metrics_csv(run / "logs" / "metrics.csv")
    want = read_metrics_csv(tmp_path / "ref" / "logs" / "metrics.csv")
    assert [r["epoch"] for r in rows] == [0.0, 1.0, 2.0, 3.0] == [r["epoch"] for r in want]
    for got, exp in zip(rows, want, strict=True):
        for key in ("train_loss", "val_loss", "val_acc", "lr"):
            assert got[key] == pytest.approx(exp[key], abs=1e-5), (key, got, exp)
    assert len(ref.history) == 4


def test_read_and_plot_curves(tmp_path: Path) -> None:
    csv_file = tmp_path / "m.csv"
    csv_file.write_text("epoch,step,train_loss,val_loss\n1.0,1,0.5,\n0.0,0,0.9,0.8\n")
    rows = read_metrics_csv(csv_file)
    assert rows == [
        {"epoch": 0.0, "step": 0.0, "train_loss": 0.9, "val_loss": 0.8},
        {"epoch": 1.0, "step": 1.0, "train_loss": 0.5},
    ]
    png = plot_curves(rows, tmp_path / "c.png", chosen_epoch=0, title="t", refit_rows=rows[:1])
    assert png.read_bytes()[:8] == PNG and not list(tmp_path.glob(".*.tmp"))


def test_every_trainer_is_built_by_the_one_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fit_phase, run_finetune and train_semantic_head build their Trainers only in build_loop."""
    built: list[set[str]] = []
    init = L.Trainer.__init__

    def spy(self: L.Trainer, *args: Any, **kwargs: Any) -> None:
        built.append({f.function for f in inspect.stack()})
        init(self, *args, **kwargs)

    monkeypatch.setattr(L.Trainer, "__init__", spy)

    fit_phase(_model(), toy_set(24, 0), None, TrainConfig(epochs=1, accelerator="cpu"))
    _tiny_finetune(tmp_path)
    _tiny_zeroshot(tmp_path / "fold")
    callers = ("fit_phase", "run_finetune", "train_semantic_head")
    assert [next(c for c in callers if c in names) for names in built] == list(callers)
    assert all("build_loop" in names for names in built)


def _tiny_finetune(tmp_path: Path) -> None:
    from skyfuse.data.folder import SceneFolder
    from skyfuse.data.splits import make_split
    from skyfuse.data.synthetic import make_synthetic_dataset
    from skyfuse.training.finetune import run_finetune
    from tests.encoders import tiny_models

    data = make_synthetic_dataset(tmp_path / "d", per_class=4, size=32, classes=["beach", "forest"])
    folder = SceneFolder(data)
    captions = {s.rel: f"an image of {s.class_name}" for s in folder}
    split = make_split(folder, train=0.5, val=0.25, seed=0)
    cfg = TrainConfig(
        epochs=2, batch_size=4, finetune=True, num_workers=0, accelerator="cpu", devices="1"
    )
    out = tmp_path / "ft"
    run_finetune(
        folder, split, captions, model="concat", cfg=cfg, fusion={"width": 16, "heads": 2},
        out_dir=out, image_encoder=f"hf:{tiny_models.make_vit(tmp_path / 'vit')}",
        text_encoder=f"hf:{tiny_models.make_bert(tmp_path / 'bert')}", cache_dir=tmp_path / "c",
    )  # fmt: skip
    rows = read_metrics_csv(out / "logs" / "metrics.csv")
    assert [r["epoch"] for r in rows] == [0.0, 1.0] and "val_acc" in rows[0]
    assert (out / "curves.png").read_bytes()[:8] == PNG


def _tiny_zeroshot(fold_dir: Path) -> None:
    from skyfuse.zeroshot.folds import make_folds
    from skyfuse.zeroshot.task import HeadTrainConfig, ZeroShotData, train_semantic_head
    from tests.zeroshot.fakes import linear_world

    classes, emb, feats = linear_world(n_classes=4, per_class=6)
    fold = make_folds(
        {c: [r for r in feats.rels if r.startswith(c)] for c in classes}, unseen=0.25, folds=1
    )[0]
    index = {c: i for i, c in enumerate(classes)}
    e_seen = emb[[index[c] for c in fold.seen]]
    train = ZeroShotData.from_features(feats, fold.train, fold.seen)
    val = ZeroShotData.from_features(feats, fold.val, fold.seen) if fold.val else None
    base = FusionConfig(model="image", image_dim=24, text_dim=16, num_classes=3, width=16, heads=2)
    cfg = HeadTrainConfig(epochs=2, batch_size=8)
    _, history = train_semantic_head(base, train, val, e_seen, cfg, run_dir=fold_dir)
    assert len(read_metrics_csv(fold_dir / "logs" / "metrics.csv")) == len(history) > 0


@pytest.mark.skipif(
    not (loop_mod._importable("tensorboard") or loop_mod._importable("tensorboardX")),
    reason="needs tensorboard (pip install 'skyfuse[tensorboard]')",
)
def test_tensorboard_logger_writes_under_logs(tmp_path: Path) -> None:
    out = tmp_path / "run"
    _run(out, logger="tensorboard")
    assert list((out / "logs").glob("events.out.tfevents.*"))
    assert not (out / "logs" / "metrics.csv").exists()
