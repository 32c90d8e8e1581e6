from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from skyfuse.models import FusionConfig, create_model
from skyfuse.training import fit as fit_mod
from skyfuse.training.config import TrainConfig
from skyfuse.training.data import TensorBatches, TensorSet
from skyfuse.training.evaluate import evaluate_model
from skyfuse.training.fit import fit_phase, train_features
from tests.training.helpers import toy_set

CLASSES = ["c0", "c1", "c2"]


def _builder(model: str = "dual", dropout: float = 0.1):
    cfg = FusionConfig(
        model=model,
        image_dim=16,
        text_dim=8,
        num_classes=3,
        width=16,
        heads=2,
        levels=1,
        dropout=dropout,
    )
    return lambda: create_model(cfg)


def test_batches_trim_padding_and_shuffle_per_epoch() -> None:
    data = toy_set(20, 0)
    data.text_mask[:, 5:] = False
    batches = TensorBatches(data, 8, shuffle=True, seed=1)
    assert len(batches) == 3
    first = [b["label"] for b in batches]
    second = [b["label"] for b in batches]
    assert all(b.shape[0] <= 8 for b in first)
    assert not all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert next(iter(batches))["text_tokens"].shape[1] == 5
    shards = [TensorBatches(data, 4, shuffle=False, rank=r, world_size=3) for r in range(3)]
    assert {len(s) for s in shards} == {2}


@pytest.mark.parametrize("model", ["dual", "concat"])
def test_learns_toy_task(model: str) -> None:
    train, val, test = toy_set(240, 0), toy_set(30, 1), toy_set(90, 2)
    cfg = TrainConfig(epochs=8, batch_size=32, lr=3e-3, seed=0)
    out = train_features(_builder(model), train, val, cfg)
    assert 0 <= out.best_epoch < out.epochs_run <= 8
    assert evaluate_model(out.model, test, CLASSES)["oa"] > 0.8


def test_same_seed_same_model() -> None:
    train, val = toy_set(96, 0), toy_set(12, 1)
    cfg = TrainConfig(epochs=2, batch_size=32, seed=5)
    a = train_features(_builder(), train, val, cfg).model.state_dict()
    b = train_features(_builder(), train, val, cfg).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_refit_trains_on_train_plus_val_for_chosen_epochs() -> None:
    train, val = toy_set(96, 0), toy_set(12, 1)
    cfg = TrainConfig(epochs=4, batch_size=32, refit=True, patience=2)
    out = train_features(_builder(), train, val, cfg)
    assert out.refit_epochs == out.best_epoch + 1
    assert out.refit_history is not None and len(out.refit_history) == out.refit_epochs
    assert all("val_loss" not in row for row in out.refit_history)


class _Boom(Callback):
    def on_train_epoch_end(self, trainer, pl_module) -> None:  # type: ignore[no-untyped-def]
        if trainer.current_epoch == 1:
            raise RuntimeError("killed")


def test_resume_after_kill_matches_uninterrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train, val = toy_set(64, 0), toy_set(12, 1)
    cfg = TrainConfig(epochs=4, batch_size=16, patience=10, seed=2)
    torch.manual_seed(0)
    ref = fit_phase(_builder(dropout=0.0)(), train, val, cfg)

    real_loop = fit_mod.build_loop

    def boom_loop(*args, **kwargs):  # type: ignore[no-untyped-def]
        loop = real_loop(*args, **kwargs)
        loop.trainer.callbacks.insert(0, _Boom())
        return loop

    monkeypatch.setattr(fit_mod, "build_loop", boom_loop)
    torch.manual_seed(0)
    with pytest.raises(RuntimeError, match="killed"):
        fit_phase(_builder(dropout=0.0)(), train, val, cfg, workdir=tmp_path)
    last = tmp_path / "last.ckpt"
    assert last.is_file()
    state = torch.load(
        last, weights_only=True
    )  # plain tensors and numbers only: no pickled objects
    assert state["epoch"] == 0
    monkeypatch.setattr(fit_mod, "build_loop", real_loop)
    torch.manual_seed(
        123
    )  # a fresh process: different initial weights, overwritten by the checkpoint
    resumed = fit_phase(_builder(dropout=0.0)(), train, val, cfg, workdir=tmp_path)
    assert resumed.epochs_run == ref.epochs_run == 4
    assert resumed.best_epoch == ref.best_epoch
    a, b = ref.model.state_dict(), resumed.model.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_concat_pads_token_lengths() -> None:
    a, b = toy_set(4, 0, nt=5), toy_set(3, 1, nt=7)
    both = TensorSet.concat([a, b])
    assert both.text_tokens.shape[:2] == (7, 7)
    assert not both.text_mask[:4, 5:].any()


def test_ctrl_c_becomes_training_interrupted_and_restores_sigint() -> None:
    import signal

    cfg = TrainConfig(epochs=3, accelerator="cpu", devices="1")

    def ctrl_c(row: dict[str, float]) -> None:
        raise KeyboardInterrupt

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(fit_mod.TrainingInterrupted):
        fit_phase(_builder()(), toy_set(24, seed=0), None, cfg, on_epoch=ctrl_c)
    assert signal.getsignal(signal.SIGINT) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_gpu_accelerator_without_gpu_is_config_error() -> None:
    from skyfuse.errors import ConfigError

    cfg = TrainConfig(accelerator="gpu")
    with pytest.raises(ConfigError, match=r"--accelerator gpu .*use --accelerator cpu"):
        fit_mod.make_trainer(cfg, accelerator="gpu", devices="auto", logger=False)
