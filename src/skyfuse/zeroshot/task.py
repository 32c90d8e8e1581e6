"""Training the semantic head on seen classes (Lightning), on frozen cached features.

Model selection uses seen-class validation images only (never an unseen class): the epoch with the
lowest validation loss is kept, with early stopping. Settings live in `HeadTrainConfig`. The Trainer,
selection and logging come from the one training loop (`skyfuse.training.loop.build_loop`); rows and
batches from `skyfuse.training.data`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import lightning as L
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from skyfuse.errors import BadInputError, ConfigError
from skyfuse.models import FusionConfig
from skyfuse.training.data import TensorBatches, TensorSet
from skyfuse.training.loop import LoopSettings, build_loop
from skyfuse.zeroshot.folds import row_labels
from skyfuse.zeroshot.head import SemanticHead

Batch = dict[str, torch.Tensor]


class HeadTrainConfig(BaseModel):
    """Optimisation and head settings of one zero-shot training run."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(30, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    batch_size: int = Field(64, ge=1)
    patience: int = Field(5, ge=1, description="early-stopping patience on seen-class val loss")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    logit_scale: float = Field(20.0, gt=0, description="initial temperature of the cosine logits")
    init_gain: float = Field(0.05, ge=0, description="initial scale of the projection weights")
    caption_residual: bool | None = Field(
        None, description="add the caption vector; None = when the fusion model reads text"
    )
    seed: int = 0
    accelerator: str = "cpu"
    logger: Literal["csv", "tensorboard", "mlflow", "wandb", "none"] = Field(
        "csv", description="per-epoch log under the run folder given to train_semantic_head"
    )

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            parts = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
            raise ConfigError(f"invalid zero-shot training settings ({'; '.join(parts)})") from None


class FeatureRows(Protocol):
    """The fields of `skyfuse.encoders.features.FeatureSet` the zero-shot code reads."""

    rels: list[str]
    image_tokens: torch.Tensor
    image_mask: torch.Tensor
    text_tokens: torch.Tensor
    text_mask: torch.Tensor
    text_pooled: torch.Tensor


@dataclass(kw_only=True)
class ZeroShotData(TensorSet):
    """A `TensorSet` plus each caption's pooled vector (``caption_vec``), which the semantic head
    adds to its projection; labels index the fold's `class_names`.

    Batches differ from the classifier's in two ways, kept so the zero-shot numbers do not move:
    `take` does not trim padding columns, and `Batches` seeds its permutations ``seed + epoch``.
    `TensorSet.concat` of these drops ``caption_vec`` (nothing here concatenates them).
    """

    caption_vec: torch.Tensor

    @classmethod
    def from_features(  # type: ignore[override]
        cls, features: FeatureRows, rels: Sequence[str], class_names: Sequence[str]
    ) -> ZeroShotData:
        """Rows of `features` for `rels`, labelled by their class folder's index in `class_names`."""
        rows, labels = row_labels(features.rels, rels, class_names)
        idx = torch.tensor(rows, dtype=torch.long)
        return cls(
            image_tokens=features.image_tokens.index_select(0, idx),
            image_mask=features.image_mask.index_select(0, idx),
            text_tokens=features.text_tokens.index_select(0, idx),
            text_mask=features.text_mask.index_select(0, idx),
            caption_vec=features.text_pooled.index_select(0, idx).float(),
            labels=torch.tensor(labels, dtype=torch.long),
            rels=list(rels),
        )

    def take(self, idx: torch.Tensor, view: torch.Tensor | int | None = None) -> Batch:
        return {
            "image_tokens": self.image_tokens.index_select(0, idx),
            "image_mask": self.image_mask.index_select(0, idx),
            "text_tokens": self.text_tokens.index_select(0, idx),
            "text_mask": self.text_mask.index_select(0, idx),
            "caption_vec": self.caption_vec.index_select(0, idx),
            "label": self.labels.index_select(0, idx),
        }


class Batches(TensorBatches):
    """`TensorBatches` over `ZeroShotData` (one process, one view), permutations from seed + epoch."""

    def __init__(
        self, data: ZeroShotData, batch_size: int, *, shuffle: bool, seed: int = 0
    ) -> None:
        super().__init__(data, batch_size, shuffle=shuffle, seed=seed)

    def shuffle_seed(self) -> int:
        return self.seed + self.epoch


def head_inputs(head: SemanticHead, batch: Batch) -> tuple[torch.Tensor | None, ...]:
    """The four token inputs + caption vector, None for a modality the fusion model ignores."""
    fusion = head.fusion
    image = (batch["image_tokens"], batch["image_mask"]) if fusion.uses_image else (None, None)
    text = (batch["text_tokens"], batch["text_mask"]) if fusion.uses_text else (None, None)
    return (*image, *text, batch["caption_vec"])


class SemanticTask(L.LightningModule):
    """Cross-entropy over the seen classes' embeddings (the loop keeps the best-val-loss weights)."""

    def __init__(self, head: SemanticHead, class_embeddings: torch.Tensor, cfg: HeadTrainConfig):
        super().__init__()
        self.head = head
        self.cfg = cfg
        self.register_buffer("class_embeddings", F.normalize(class_embeddings.float(), dim=-1))
        self._val: list[tuple[float, int, int]] = []

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.head(*head_inputs(self.head, batch), self.class_embeddings)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        logits = self(batch)
        loss = F.cross_entropy(logits, batch["label"], label_smoothing=self.cfg.label_smoothing)
        n = int(batch["label"].shape[0])
        acc = (logits.detach().argmax(1) == batch["label"]).float().mean()
        # epoch means for the loop's History, which writes the loggers itself (one row per epoch)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=n, logger=False)
        self.log("train_acc", acc, on_step=False, on_epoch=True, batch_size=n, logger=False)
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        logits = self(batch)
        n = int(batch["label"].shape[0])
        loss = F.cross_entropy(logits, batch["label"], reduction="sum").item()
        hits = int((logits.argmax(1) == batch["label"]).sum())
        self._val.append((loss, hits, n))

    def on_validation_epoch_end(self) -> None:
        if not self._val or self.trainer.sanity_checking:
            self._val.clear()
            return
        total = sum(v[2] for v in self._val)
        loss = sum(v[0] for v in self._val) / total
        acc = sum(v[1] for v in self._val) / total
        self._val.clear()
        self.log("val_loss", loss, logger=False)
        self.log("val_acc", acc, logger=False)

    def configure_optimizers(self) -> Any:
        decay = [p for n, p in self.head.named_parameters() if p.ndim >= 2]
        other = [p for n, p in self.head.named_parameters() if p.ndim < 2]
        return torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.cfg.weight_decay},
                {"params": other, "weight_decay": 0.0},
            ],
            lr=self.cfg.lr,
        )


def train_semantic_head(
    base: FusionConfig,
    train: ZeroShotData,
    val: ZeroShotData | None,
    class_embeddings: torch.Tensor,
    cfg: HeadTrainConfig | None = None,
    *,
    run_dir: Path | None = None,
) -> tuple[SemanticHead, list[dict[str, float]]]:
    """Train a fresh head on `train` (labels index `class_embeddings`); returns (head, history).

    With `val`, the weights of the lowest-val-loss epoch are returned (early stopping on patience).
    The history has one row per epoch (train loss / accuracy, val loss / accuracy with `val`, lr,
    seconds); with `run_dir` (e.g. a fold's folder) it is also logged there (``cfg.logger``).
    """
    cfg = cfg or HeadTrainConfig()
    if len(train) == 0:
        raise BadInputError("no training images in the seen classes; use a larger dataset")
    torch.manual_seed(cfg.seed)
    from skyfuse.models import MODELS

    reads_text = bool(getattr(MODELS.get(base.model), "uses_text", True))
    residual = reads_text if cfg.caption_residual is None else cfg.caption_residual
    head = SemanticHead.build(
        base, caption_residual=residual, logit_scale=cfg.logit_scale, init_gain=cfg.init_gain
    )
    task = SemanticTask(head, class_embeddings, cfg)
    has_val = val is not None and len(val) > 0
    settings = LoopSettings(
        accelerator=cfg.accelerator,
        devices=1,
        devices_flag="1",
        grad_clip=1.0,
        monitor="val_loss",
        patience=cfg.patience,
        logger=cfg.logger,
    )
    loop = build_loop(
        settings,
        max_epochs=cfg.epochs,
        has_val=has_val,
        run_dir=run_dir,
        hparams=cfg.model_dump(mode="json"),
    )
    train_batches = Batches(train, cfg.batch_size, shuffle=True, seed=cfg.seed)
    val_batches = Batches(val, 256, shuffle=False) if val is not None and has_val else None
    loop.fit(task, train_dataloaders=train_batches, val_dataloaders=val_batches)
    loop.keep_best(head)
    head.eval()
    return head.cpu(), loop.history.rows


@torch.no_grad()
def score(
    head: SemanticHead, data: ZeroShotData, class_embeddings: torch.Tensor, batch_size: int = 256
) -> torch.Tensor:
    """(M, C) cosine logits of every row of `data` against `class_embeddings`."""
    head.eval()
    out = [
        head(*head_inputs(head, batch), class_embeddings)
        for batch in Batches(data, batch_size, shuffle=False)
    ]
    return torch.cat(out) if out else torch.zeros(0, class_embeddings.shape[0])
