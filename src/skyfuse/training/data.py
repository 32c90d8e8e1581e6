"""In-memory labelled features and the batches Lightning trains on.

Why not a DataLoader: frozen features are a few hundred MB of tensors already in memory; a DataLoader
adds per-sample collation (and worker processes) that cost more than the fusion model's step on a CPU.
`TensorBatches` slices whole batches out of the tensors with a seeded permutation instead, trims
padding columns that no sample in the batch uses, and shards by rank when Lightning runs several
processes (DDP), so the same code serves one CPU and many GPUs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import lightning as L
import torch

from skyfuse.errors import BadInputError

Batch = dict[str, torch.Tensor]


class FeatureLike(Protocol):
    """The fields of `skyfuse.encoders.features.FeatureSet` that training reads."""

    rels: list[str]
    image_tokens: torch.Tensor
    image_mask: torch.Tensor
    text_tokens: torch.Tensor
    text_mask: torch.Tensor


@dataclass
class TensorSet:
    """Labelled token features: the four model inputs plus ``labels`` (M,), all on the CPU.

    ``views`` (V, M, N, D), when present, holds the image tokens of V dihedral views of every image
    (view 0 = ``image_tokens``): training draws one view per sample and evaluation averages over all.
    """

    image_tokens: torch.Tensor
    image_mask: torch.Tensor
    text_tokens: torch.Tensor
    text_mask: torch.Tensor
    labels: torch.Tensor
    rels: list[str]
    views: torch.Tensor | None = None

    def __post_init__(self) -> None:
        m = int(self.labels.shape[0])
        if self.views is not None and tuple(self.views.shape[1:]) != tuple(self.image_tokens.shape):
            raise BadInputError(
                f"features: views have shape {tuple(self.views.shape)}, image tokens "
                f"{tuple(self.image_tokens.shape)}"
            )
        for name in ("image_tokens", "image_mask", "text_tokens", "text_mask"):
            if int(getattr(self, name).shape[0]) != m:
                raise BadInputError(
                    f"features: {name} has {getattr(self, name).shape[0]} rows, labels {m}"
                )
        if len(self.rels) != m:
            raise BadInputError(f"features: {len(self.rels)} paths for {m} rows")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_views(self) -> int:
        return 1 if self.views is None else int(self.views.shape[0])

    @property
    def image_dim(self) -> int:
        return int(self.image_tokens.shape[-1])

    @property
    def text_dim(self) -> int:
        return int(self.text_tokens.shape[-1])

    @classmethod
    def from_features(
        cls, features: FeatureLike, rels: Sequence[str], class_names: Sequence[str]
    ) -> TensorSet:
        """Rows of ``features`` for ``rels`` (in that order), labelled by their class folder."""
        index = {r: i for i, r in enumerate(features.rels)}
        missing = [r for r in rels if r not in index]
        if missing:
            raise BadInputError(
                f"{len(missing)} image(s) of the split have no features (e.g. {missing[0]});"
                " extract features for the whole dataset"
            )
        class_to_idx = {c: i for i, c in enumerate(class_names)}
        labels = []
        for r in rels:
            cls_name = r.split("/", 1)[0]
            if cls_name not in class_to_idx:
                raise BadInputError(f"{r}: class {cls_name!r} is not one of the model's classes")
            labels.append(class_to_idx[cls_name])
        idx = torch.tensor([index[r] for r in rels], dtype=torch.long)
        views = getattr(features, "image_views", None)
        stacked = None
        if views is not None and len(views) > 1:  # filled view by view: no second full copy
            first = views.tokens[0]
            stacked = torch.empty((len(views), len(idx), *first.shape[1:]), dtype=first.dtype)
            for v, tokens in enumerate(views.tokens):
                torch.index_select(tokens, 0, idx, out=stacked[v])
        return cls(
            image_tokens=stacked[0] if stacked is not None else features.image_tokens[idx],
            image_mask=features.image_mask.index_select(0, idx),
            text_tokens=features.text_tokens.index_select(0, idx),
            text_mask=features.text_mask.index_select(0, idx),
            labels=torch.tensor(labels, dtype=torch.long),
            rels=list(rels),
            views=stacked,
        )

    def take(self, idx: torch.Tensor, view: torch.Tensor | int | None = None) -> Batch:
        """One batch for the rows ``idx``, with all-padding token columns trimmed away.

        ``view``: the dihedral view of the image tokens, one for the batch or one per row (needs
        ``views``); None gives view 0.
        """
        im = self.image_mask.index_select(0, idx)
        tm = self.text_mask.index_select(0, idx)
        ni = _used_length(im)
        nt = _used_length(tm)
        if view is None or self.views is None:
            image = self.image_tokens.index_select(0, idx)
        elif isinstance(view, int):
            image = self.views[view].index_select(0, idx)
        else:
            image = self.views[view, idx]
        return {
            "image_tokens": image[:, :ni],
            "image_mask": im[:, :ni],
            "text_tokens": self.text_tokens.index_select(0, idx)[:, :nt],
            "text_mask": tm[:, :nt],
            "label": self.labels.index_select(0, idx),
        }

    @staticmethod
    def concat(parts: Sequence[TensorSet]) -> TensorSet:
        """Stack several sets (e.g. train + val for a refit), padding token lengths to the longest."""

        def cat(name: str) -> torch.Tensor:
            ts = [getattr(p, name) for p in parts]
            width = max(int(t.shape[1]) for t in ts)
            padded = []
            for t in ts:
                if t.shape[1] < width:
                    pad = torch.zeros((t.shape[0], width - t.shape[1], *t.shape[2:]), dtype=t.dtype)
                    t = torch.cat([t, pad], dim=1)
                padded.append(t)
            return torch.cat(padded, dim=0)

        views = None
        if all(p.views is not None for p in parts) and len({p.num_views for p in parts}) == 1:
            width = max(int(p.image_tokens.shape[1]) for p in parts)
            views = torch.cat(
                [_pad_tokens(p.views, width, dim=2) for p in parts if p.views is not None], dim=1
            )
        return TensorSet(
            image_tokens=views[0] if views is not None else cat("image_tokens"),
            image_mask=cat("image_mask"),
            text_tokens=cat("text_tokens"),
            text_mask=cat("text_mask"),
            labels=torch.cat([p.labels for p in parts]),
            rels=[r for p in parts for r in p.rels],
            views=views,
        )


def _pad_tokens(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """Zero-pad the token axis ``dim`` of ``t`` to ``width``."""
    if t.shape[dim] >= width:
        return t
    shape = list(t.shape)
    shape[dim] = width - t.shape[dim]
    return torch.cat([t, torch.zeros(shape, dtype=t.dtype)], dim=dim)


def _used_length(mask: torch.Tensor) -> int:
    """1 + the last column where any row has a real token (at least 1, so shapes stay valid)."""
    if mask.ndim != 2 or mask.shape[1] == 0:
        return int(mask.shape[1]) if mask.ndim == 2 else 0
    cols = mask.any(dim=0).nonzero()
    return max(1, int(cols.max()) + 1) if cols.numel() else 1


class TensorBatches:
    """An iterable of batches over a `TensorSet` (or a subclass with its own ``take``, as the
    zero-shot rows are); reshuffled per epoch from `shuffle_seed`."""

    def __init__(
        self,
        data: TensorSet,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        augment: bool = False,
    ) -> None:
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment and data.num_views > 1
        self.seed = seed
        self.rank = rank
        self.world_size = max(1, world_size)
        self.epoch = 0

    def shuffle_seed(self) -> int:
        """Seed of this epoch's permutation (+ 7_919: of its view draws). The zero-shot batches
        (`skyfuse.zeroshot.task.Batches`) keep their older ``seed + epoch`` stream."""
        return self.seed * 100_003 + self.epoch

    def _indices(self) -> torch.Tensor:
        n = len(self.data)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.shuffle_seed())
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        if self.world_size > 1:  # equal shares per rank, as DistributedSampler does
            per = -(-n // self.world_size)
            order = torch.cat([order, order[: per * self.world_size - n]])
            order = order[self.rank :: self.world_size]
        return order

    def __len__(self) -> int:
        n = len(self._indices()) if self.world_size > 1 else len(self.data)
        return -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        order = self._indices()
        views = None
        if self.augment:  # one dihedral view per sample, drawn from the same seeded stream
            g = torch.Generator().manual_seed(self.shuffle_seed() + 7_919)
            views = torch.randint(self.data.num_views, (len(self.data),), generator=g)
        self.epoch += 1
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            yield self.data.take(idx, views[idx] if views is not None else None)


class FeatureDataModule(L.LightningDataModule):
    """Train / val batches over in-memory features (val may be absent, e.g. in a refit)."""

    def __init__(
        self, train: TensorSet, val: TensorSet | None, *, batch_size: int, seed: int = 0
    ) -> None:
        super().__init__()
        self.train_set = train
        self.val_set = val
        self.batch_size = batch_size
        self.seed = seed
        self._train_batches: TensorBatches | None = None

    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def train_dataloader(self) -> TensorBatches:
        rank, world = self._rank_world()
        if self._train_batches is None:
            self._train_batches = TensorBatches(
                self.train_set,
                self.batch_size,
                shuffle=True,
                seed=self.seed,
                rank=rank,
                world_size=world,
                augment=True,
            )
        return self._train_batches

    def val_dataloader(self) -> Any:
        if self.val_set is None or len(self.val_set) == 0:
            return []
        rank, world = self._rank_world()
        return TensorBatches(self.val_set, 256, shuffle=False, rank=rank, world_size=world)

    def state_dict(self) -> dict[str, Any]:
        """The shuffling epoch, so a resumed run continues the same sequence of permutations."""
        return {"epoch": self._train_batches.epoch if self._train_batches is not None else 0}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self._resume_epoch = int(state_dict.get("epoch", 0))
        batches = self.train_dataloader()
        batches.epoch = self._resume_epoch
