"""Training the semantic head on seen classes (Lightning), on frozen cached features.

Model selection uses seen-class validation images only (never an unseen class): the epoch with the
lowest validation loss is kept, with early stopping. Settings live in `HeadTrainConfig`.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import lightning as L
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from skyfuse.errors import BadInputError, ConfigError
from skyfuse.models import FusionConfig
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


@dataclass
class ZeroShotData:
    """Model inputs + the caption's pooled vector + labels (indices into `class_names`)."""

    image_tokens: torch.Tensor
    image_mask: torch.Tensor
    text_tokens: torch.Tensor
    text_mask: torch.Tensor
    caption_vec: torch.Tensor
    labels: torch.Tensor
    rels: list[str]

    @classmethod
    def from_features(
        cls, features: FeatureRows, rels: Sequence[str], class_names: Sequence[str]
    ) -> ZeroShotData:
        """Rows of `features` for `rels`, labelled by their class folder's index in `class_names`."""
        rows, labels = row_labels(features.rels, rels, class_names)
        idx = torch.tensor(rows, dtype=torch.long)
        return cls(
            features.image_tokens.index_select(0, idx),
            features.image_mask.index_select(0, idx),
            features.text_tokens.index_select(0, idx),
            features.text_mask.index_select(0, idx),
            features.text_pooled.index_select(0, idx).float(),
            torch.tensor(labels, dtype=torch.long),
            list(rels),
        )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, idx: torch.Tensor) -> Batch:
        return {
            "image_tokens": self.image_tokens.index_select(0, idx),
            "image_mask": self.image_mask.index_select(0, idx),
            "text_tokens": self.text_tokens.index_select(0, idx),
            "text_mask": self.text_mask.index_select(0, idx),
            "caption_vec": self.caption_vec.index_select(0, idx),
            "label": self.labels.index_select(0, idx),
        }


class Batches:
    """Whole batches sliced from tensors; reshuffled each epoch from seed + epoch (no collation)."""

    def __init__(
        self, data: ZeroShotData, batch_size: int, *, shuffle: bool, seed: int = 0
    ) -> None:
        self.data, self.batch_size, self.shuffle, self.seed = data, batch_size, shuffle, seed
        self.epoch = 0

    def __len__(self) -> int:
        return (len(self.data) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.data)
        if self.shuffle:
            order = torch.randperm(
                n, generator=torch.Generator().manual_seed(self.seed + self.epoch)
            )
            self.epoch += 1
        else:
            order = torch.arange(n)
        for i in range(0, n, self.batch_size):
            yield self.data.take(order[i : i + self.batch_size])


def head_inputs(head: SemanticHead, batch: Batch) -> tuple[torch.Tensor | None, ...]:
    """The four token inputs + caption vector, None for a modality the fusion model ignores."""
    fusion = head.fusion
    image = (batch["image_tokens"], batch["image_mask"]) if fusion.uses_image else (None, None)
    text = (batch["text_tokens"], batch["text_mask"]) if fusion.uses_text else (None, None)
    return (*image, *text, batch["caption_vec"])


class SemanticTask(L.LightningModule):
    """Cross-entropy over the seen classes' embeddings; keeps the best-val-loss weights in memory."""

    def __init__(self, head: SemanticHead, class_embeddings: torch.Tensor, cfg: HeadTrainConfig):
        super().__init__()
        self.head = head
        self.cfg = cfg
        self.register_buffer("class_embeddings", F.normalize(class_embeddings.float(), dim=-1))
        self.best_loss = float("inf")
        self.best_state: dict[str, torch.Tensor] | None = None
        self.history: list[dict[str, float]] = []
        self._val: list[tuple[float, int, int]] = []

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.head(*head_inputs(self.head, batch), self.class_embeddings)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss = F.cross_entropy(
            self(batch), batch["label"], label_smoothing=self.cfg.label_smoothing
        )
        self.log("train_loss", loss, prog_bar=False, batch_size=int(batch["label"].shape[0]))
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
        self.log("val_loss", loss)
        self.history.append({"epoch": float(self.current_epoch), "val_loss": loss, "val_acc": acc})
        if loss < self.best_loss:
            self.best_loss = loss
            self.best_state = copy.deepcopy(self.head.state_dict())

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


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence Lightning's per-fit banners (a run trains one head per fold and caption setting)."""
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="lightning")
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")
            yield
    finally:
        logger.setLevel(level)


def train_semantic_head(
    base: FusionConfig,
    train: ZeroShotData,
    val: ZeroShotData | None,
    class_embeddings: torch.Tensor,
    cfg: HeadTrainConfig | None = None,
) -> tuple[SemanticHead, list[dict[str, float]]]:
    """Train a fresh head on `train` (labels index `class_embeddings`); returns (head, val history).

    With `val`, the weights of the lowest-val-loss epoch are returned (early stopping on patience).
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
    callbacks: list[Any] = []
    if val is not None and len(val):
        callbacks.append(L.pytorch.callbacks.EarlyStopping("val_loss", patience=cfg.patience))
    with quiet_lightning():
        trainer = L.Trainer(
            max_epochs=cfg.epochs,
            accelerator=cfg.accelerator,
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=callbacks,
            gradient_clip_val=1.0,
            num_sanity_val_steps=0,
        )
    train_batches = Batches(train, cfg.batch_size, shuffle=True, seed=cfg.seed)
    val_batches = Batches(val, 256, shuffle=False) if val is not None and len(val) else None
    with quiet_lightning():
        trainer.fit(task, train_dataloaders=train_batches, val_dataloaders=val_batches)
    if task.best_state is not None:
        head.load_state_dict(task.best_state)
    head.eval()
    return head.cpu(), task.history


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
