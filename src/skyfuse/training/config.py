"""TrainConfig: the optimisation settings of one run, saved in ``metrics.json`` beside the results.

Defaults are for frozen features on a CPU (the common case); ``finetune`` switches to the paper's
end-to-end mode, where ``encoder_lr`` applies to the encoders and ``lr`` to the fusion network.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from skyfuse.errors import ConfigError


class TrainConfig(BaseModel):
    """Optimiser, schedule, stopping and Lightning pass-through settings of a training run.

    Checked like any pydantic model; user documents reach it through `skyfuse.experiments`, which
    turns a bad value into one line naming its key (``training.lr: ...``).
    """

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(
        default=30,
        ge=1,
        description="epochs (the schedule's horizon; a maximum with val selection)",
    )
    lr: float = Field(default=1e-3, gt=0, description="learning rate of the fusion network")
    encoder_lr: float = Field(
        default=1e-5, gt=0, description="learning rate of the encoders (--finetune)"
    )
    weight_decay: float = Field(default=0.05, ge=0)
    batch_size: int = Field(default=64, ge=1)
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    warmup_epochs: int = Field(
        default=1, ge=0, description="linear warm-up epochs before the schedule"
    )
    step_size: int = Field(
        default=20, ge=1, description="epochs between x gamma decays (schedule=step)"
    )
    gamma: float = Field(default=0.1, gt=0, le=1)
    grad_clip: float | None = Field(
        default=1.0, gt=0, description="gradient-norm clip; None disables"
    )
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    patience: int = Field(
        default=10, ge=1, description="early-stopping patience in epochs (on val)"
    )
    monitor: Literal["val_loss", "val_acc"] = "val_loss"
    refit: bool = Field(
        default=False, description="choose the epoch count on val, then refit on train+val"
    )
    selection: Literal["fixed", "val"] = Field(
        default="fixed",
        description="fixed: train on train + val for exactly `epochs` epochs (the schedule decays to"
        " its end; no early stopping); val: early stopping on the val split (optionally --refit)",
    )
    seed: int = 0
    finetune: bool = False
    augment: bool = Field(
        default=True, description="flips and 90-degree rotations (--finetune only)"
    )
    views: Literal[1, 2, 4, 8] = Field(
        default=8,
        description="dihedral views of each image encoded for the frozen path: training draws one"
        " per sample, evaluation averages all (1 = off, 8 = every rotation and flip)",
    )
    accelerator: str = "auto"
    devices: str = "auto"
    strategy: str = "auto"
    num_nodes: int = Field(default=1, ge=1)
    precision: str | None = Field(default=None, description="Lightning precision, e.g. bf16-mixed")
    num_workers: int = Field(default=2, ge=0, description="image-loading workers (--finetune only)")
    logger: Literal["csv", "tensorboard", "mlflow", "wandb", "none"] = Field(
        default="csv",
        description="where per-epoch metrics go: DIR/logs/metrics.csv (csv), or Lightning's"
        " TensorBoard/MLflow/W&B logger when its package is installed; none = no log",
    )

    def lightning_devices(self) -> int | str | list[int]:
        """``devices`` as Lightning expects it: "auto", a count, or a list of indices."""
        value = self.devices.strip()
        if value in ("auto", "-1"):
            return value if value == "auto" else -1
        if "," in value:
            return [int(v) for v in value.split(",") if v.strip()]
        try:
            return int(value)
        except ValueError:
            raise ConfigError(
                f"--devices {value!r}: give auto, a count or a list like 0,1"
            ) from None
