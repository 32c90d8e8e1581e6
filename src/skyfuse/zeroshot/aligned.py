"""Locked-text alignment on pooled vectors, every setting chosen on class-disjoint validation.

The image side (the pooled image vector, optionally with the caption's pooled vector) is mapped into
the frozen text encoder's sentence space by a small model trained with two objectives:
- LiT (locked-image... here locked *text*) InfoNCE: each image nearest its own caption's sentence vector
  among the batch (symmetric). Captions describe content in open vocabulary, so the map also learns
  concepts that no training class name uses;
- class cross-entropy against the seen classes' embeddings (DeViSE-style).
``caption_weight`` mixes the two (1 = captions only). Scores against any class are cosines; the
**ensemble** adds the untrained caption score, ``s = alpha * image-side + (1 - alpha) * caption``
(plus, with weight ``text_weight``, a caption-side ridge map trained with the class objective), and
**calibrated stacking** (Chao et al., 2016) subtracts ``gamma`` from every seen class's score in the
generalised setting.

Why pooled vectors: a linear map over a 1280-d EfficientNet vector trains in about a second on a CPU,
so every choice (epochs, temperature, caption weight, alpha, gamma) can be made by training on some
seen classes and scoring the others (the class-disjoint validation of Xian et al., 2018), over several
inner splits, and then refitted on all seen classes. Unseen test classes are never looked at.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import Tensor, nn

from skyfuse.errors import BadInputError, ConfigError
from skyfuse.zeroshot.folds import class_folds, row_labels
from skyfuse.zeroshot.metrics import harmonic_mean, per_class_topk

#: Trained candidates, in the order they are listed; `caption_only` is the untrained baseline.
ALIGNED = "aligned"
ENSEMBLE = "aligned_plus_caption"
CANDIDATES = (ALIGNED, ENSEMBLE)
METHOD_LABELS = {
    ALIGNED: "aligned image side",
    ENSEMBLE: "aligned image side + caption (weighted)",
}


class AlignConfig(BaseModel):
    """Grids and optimisation settings; the grids are searched on validation classes only."""

    model_config = ConfigDict(extra="forbid")

    epochs: tuple[int, ...] = Field(
        (1, 2, 3, 5, 10, 20), description="epoch counts tried (checkpoints of one run)"
    )
    caption_weights: tuple[float, ...] = Field(
        (0.0, 0.5, 1.0), description="weights of the caption InfoNCE vs the class objective tried"
    )
    temperatures: tuple[float, ...] = Field((0.05, 0.1), description="softmax temperatures tried")
    alphas: tuple[float, ...] = Field(
        (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
        description="image-side weights of the ensemble tried",
    )
    gammas: tuple[float, ...] = Field(
        tuple(round(-0.2 + 0.01 * i, 2) for i in range(101)),
        description="seen-class score offsets tried for calibrated stacking",
    )
    centre_caption: tuple[bool, ...] = Field(
        (False, True),
        description="tried: subtract the mean training caption vector before the caption score",
    )
    text_weights: tuple[float, ...] = Field(
        (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6),
        description="tried: weight of the caption-side map's score in the ensemble (0 = none)",
    )
    text_ridge: float = Field(1.0, gt=0, description="ridge penalty of the caption-side map")
    text_maps: tuple[str, ...] = Field(
        ("ridge", "softmax"),
        description="caption-side maps tried: closed-form ridge onto the class embedding, or"
        " identity + a correction trained with the class softmax (cross-entropy)",
    )
    text_steps: int = Field(100, ge=1, description="full-batch Adam steps of the softmax map")
    text_lr: float = Field(1e-3, gt=0, description="learning rate of the softmax map")
    text_decay: float = Field(
        1e-4, ge=0, description="L2 penalty of the softmax map's correction to the identity"
    )
    text_temperature: float = Field(0.05, gt=0, description="temperature of the softmax map")
    caption_sentences: bool = Field(
        True,
        description="caption vector = mean of its sentences' vectors, each sentence encoded alone"
        " (False: the whole caption encoded at once, as the caption-only baseline does)",
    )
    fuse_caption: bool = Field(False, description="feed the caption vector to the map as well")
    hidden: int = Field(0, ge=0, description="hidden width of the map (0 = linear)")
    dropout: float = Field(0.0, ge=0, lt=1, description="input dropout")
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    batch_size: int = Field(256, ge=2)
    val_classes: float = Field(
        0.25, gt=0, lt=1, description="fraction of seen classes held out per inner split"
    )
    inner_splits: int = Field(3, ge=1, description="class-disjoint inner splits averaged")
    seed: int = 0

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            parts = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
            raise ConfigError(
                f"invalid zero-shot alignment settings ({'; '.join(parts)})"
            ) from None


@dataclass
class PooledRows:
    """Pooled image vectors, L2-normalised caption vectors and labels (indices into class names)."""

    image: Tensor
    caption: Tensor
    labels: Tensor
    rels: list[str]

    @classmethod
    def from_features(
        cls,
        features: Any,
        rels: Sequence[str],
        class_names: Sequence[str],
        caption: Tensor | None = None,
    ) -> PooledRows:
        """Rows of a FeatureSet-like object; the image vector is ``image_pooled`` when present,
        else the masked mean of the image tokens. The caption vector is ``features.text_pooled``,
        or `caption` (one row per ``features.rels``, e.g. sentence means) when given."""
        rows, labels = row_labels(features.rels, rels, class_names)
        idx = torch.tensor(rows, dtype=torch.long)
        return cls(
            pooled_image(features).index_select(0, idx),
            F.normalize(
                (features.text_pooled if caption is None else caption).index_select(0, idx).float(),
                dim=-1,
            ),
            torch.tensor(labels, dtype=torch.long),
            list(rels),
        )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, mask: Tensor, relabel: Sequence[int] | None = None) -> PooledRows:
        """Rows where `mask`; with `relabel` (old label -> new label list), labels are remapped."""
        idx = mask.nonzero().flatten()
        labels = self.labels.index_select(0, idx)
        if relabel is not None:
            labels = torch.tensor(relabel, dtype=torch.long)[labels]
        return PooledRows(
            self.image.index_select(0, idx),
            self.caption.index_select(0, idx),
            labels,
            [self.rels[i] for i in idx.tolist()],
        )


def pooled_image(features: Any) -> Tensor:
    pooled = getattr(features, "image_pooled", None)
    if pooled is not None:
        return pooled.float()
    tokens, mask = features.image_tokens.float(), features.image_mask
    m = mask[..., None].float()
    return (tokens * m).sum(1) / m.sum(1).clamp(min=1.0)


class AlignedMap(nn.Module):
    """Standardise the input, (optionally an MLP), linear map to the sentence space, L2-normalise."""

    mean: Tensor
    std: Tensor

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        layers: list[nn.Module] = [nn.Dropout(dropout)] if dropout > 0 else []
        if hidden:
            layers += [nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim)]
        else:
            layers.append(nn.Linear(in_dim, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.net((x - self.mean) / self.std), dim=-1)


def map_inputs(rows: PooledRows, fuse_caption: bool) -> Tensor:
    return torch.cat([rows.image, rows.caption], dim=-1) if fuse_caption else rows.image


@dataclass
class Run:
    """One training: the caption weight and temperature, and the map at each checkpoint epoch."""

    caption_weight: float
    temperature: float
    states: dict[int, dict[str, Tensor]] = field(default_factory=dict)


def train_map(
    rows: PooledRows,
    class_embeddings: Tensor,
    *,
    caption_weight: float,
    temperature: float,
    cfg: AlignConfig,
    seed: int,
) -> tuple[AlignedMap, Run]:
    """Train one map on `rows` (labels index `class_embeddings`), keeping a copy at every epoch
    count of ``cfg.epochs``."""
    if len(rows) < 2:
        raise BadInputError("fewer than 2 training images in the seen classes; use more data")
    torch.manual_seed(seed)
    x = map_inputs(rows, cfg.fuse_caption)
    model = AlignedMap(x.shape[1], rows.caption.shape[1], cfg.hidden, cfg.dropout)
    model.mean.copy_(x.mean(0))
    model.std.copy_(x.std(0).clamp(min=1e-6) if len(rows) > 1 else torch.ones(x.shape[1]))
    emb = F.normalize(class_embeddings.float(), dim=-1)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    run = Run(caption_weight, temperature)
    last = max(cfg.epochs)
    n = len(rows)
    for epoch in range(1, last + 1):
        model.train()
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            if len(idx) < 2:
                continue
            z = model(x[idx])
            loss = torch.zeros(())
            if caption_weight < 1:
                logits = z @ emb.T / temperature
                loss = loss + (1 - caption_weight) * F.cross_entropy(logits, rows.labels[idx])
            if caption_weight > 0:
                sim = z @ rows.caption[idx].T / temperature
                target = torch.arange(len(idx))
                lit = (F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target)) / 2
                loss = loss + caption_weight * lit
            opt.zero_grad()
            loss.backward()
            opt.step()
        if epoch in cfg.epochs:
            run.states[epoch] = copy.deepcopy(model.state_dict())
    model.eval()
    return model, run


@torch.no_grad()
def image_scores(
    model: AlignedMap, rows: PooledRows, class_embeddings: Tensor, fuse: bool
) -> Tensor:
    """(M, C) cosines of the mapped image side against `class_embeddings`."""
    model.eval()
    return model(map_inputs(rows, fuse)) @ F.normalize(class_embeddings.float(), dim=-1).T


def caption_scores(
    caption: Tensor, class_embeddings: Tensor, centre: Tensor | None = None
) -> Tensor:
    """(M, C) cosines of the caption vectors (minus `centre`, the mean training caption, when
    given) against `class_embeddings`."""
    if centre is not None:
        caption = F.normalize(caption.float() - centre, dim=-1)
    return F.normalize(caption.float(), dim=-1) @ F.normalize(class_embeddings.float(), dim=-1).T


def combine(
    image: Tensor, caption: Tensor, alpha: float, text: Tensor | None = None, beta: float = 0.0
) -> Tensor:
    """``alpha x image + beta x text + (1 - alpha - beta) x caption`` (terms with weight 0 skipped)."""
    out = caption if alpha == 0 else image if alpha == 1 else alpha * image + (1 - alpha) * caption
    if beta and text is not None:
        out = out + beta * (text - caption)
    return out


TEXT_MAPS = ("ridge", "softmax")


def fit_text_map(
    captions: Tensor,
    labels: Tensor,
    class_embeddings: Tensor,
    ridge: float,
    kind: str = "ridge",
    cfg: AlignConfig | None = None,
) -> Tensor:
    """(D, D) caption-side map trained with the class objective, which learns which caption
    directions go with a class. ``ridge``: closed-form ridge map of the (normalised) caption vectors
    onto their class embedding. ``softmax``: the identity plus a correction trained (full-batch Adam,
    ``cfg.text_steps`` steps, L2 penalty ``cfg.text_decay`` on the correction) so that the mapped
    caption's cosine softmax over the seen classes names its class; it starts as the plain caption
    score and re-weights caption directions."""
    x = F.normalize(captions.float(), dim=-1)
    e = F.normalize(class_embeddings.float(), dim=-1)
    if kind == "ridge":
        return torch.linalg.solve(x.T @ x + ridge * torch.eye(x.shape[1]), x.T @ e[labels])
    if kind != "softmax":
        raise ConfigError(f"caption-side map must be one of {TEXT_MAPS}, got {kind!r}")
    cfg = cfg or AlignConfig()
    eye = torch.eye(x.shape[1])
    delta = torch.zeros_like(eye, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=cfg.text_lr)
    with torch.enable_grad():
        for _ in range(cfg.text_steps):
            z = F.normalize(x @ (eye + delta), dim=-1)
            loss = F.cross_entropy(z @ e.T / cfg.text_temperature, labels)
            loss = loss + cfg.text_decay * delta.pow(2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return (eye + delta).detach()


def text_scores(
    caption: Tensor, text_map: Tensor, class_embeddings: Tensor, centre: Tensor | None = None
) -> Tensor:
    """(M, C) cosines of the mapped (optionally centred) captions against `class_embeddings`."""
    if centre is not None:
        caption = caption.float() - centre
    z = F.normalize(F.normalize(caption.float(), dim=-1) @ text_map, dim=-1)
    return z @ F.normalize(class_embeddings.float(), dim=-1).T


def calibrate(scores: Tensor, seen: Tensor | int, gamma: float) -> Tensor:
    """Calibrated stacking: seen classes (the first `seen` columns, or a (C,) bool mask) lose `gamma`."""
    out = scores.clone()
    if isinstance(seen, int):
        out[:, :seen] -= gamma
    else:
        out[:, seen] -= gamma
    return out


def inner_class_splits(
    seen: Sequence[str], cfg: AlignConfig, seed: int
) -> list[tuple[list[str], list[str]]]:
    """(inner-train classes, validation classes) per inner split: a partition of the *seen* classes
    only, so no unseen test class can ever be a validation class."""
    if len(seen) < 3:
        raise ConfigError(
            f"{len(seen)} seen classes cannot be split into training and validation classes;"
            " use a dataset with more classes or lower --unseen"
        )
    return class_folds(
        list(seen), unseen=cfg.val_classes, folds=min(cfg.inner_splits, len(seen)), seed=seed
    )


@dataclass
class Choice:
    """What validation picked for one candidate, with the validation scores it was picked on."""

    caption_weight: float
    temperature: float
    epochs: int
    alpha: float
    centre_caption: bool
    gamma: float
    val_zsl: float
    val_h: float
    text_weight: float = 0.0
    text_map: str = "ridge"

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _gzsl_h(scores: Tensor, labels: Tensor, is_unseen: Tensor) -> float:
    seen = per_class_topk(scores[~is_unseen], labels[~is_unseen], 1)
    unseen = per_class_topk(scores[is_unseen], labels[is_unseen], 1)
    if math.isnan(seen):  # no held-out seen images: H is not defined, use unseen accuracy
        return unseen
    return harmonic_mean(seen, unseen)


@dataclass
class InnerSplit:
    """One class-disjoint validation split and the scores every grid point gave on it."""

    train_classes: list[str]
    val_classes: list[str]
    zsl_labels: Tensor
    gzsl_labels: Tensor
    gzsl_unseen: Tensor
    image: dict[tuple[float, float, int], tuple[Tensor, Tensor]]
    caption: dict[bool, tuple[Tensor, Tensor]]
    text: dict[tuple[bool, str], tuple[Tensor, Tensor]]


def validation_splits(
    rows: PooledRows,
    holdout: Tensor,
    seen: Sequence[str],
    class_emb: Mapping[str, Tensor],
    cfg: AlignConfig,
    *,
    seed: int = 0,
) -> list[InnerSplit]:
    """Train the grid on each inner split and score its validation classes.

    `rows` are seen-class images only (labels index `seen`). Validation classes are seen classes held
    out of inner training; `holdout` marks images of the remaining classes kept out of inner training,
    the "seen test images" of the generalised validation.
    """
    out = []
    for j, (tr_cls, va_cls) in enumerate(inner_class_splits(seen, cfg, seed)):
        order = [*tr_cls, *va_cls]
        relabel = [order.index(c) for c in seen]
        is_val = torch.tensor([c in set(va_cls) for c in seen])[rows.labels]
        train = rows.take(~is_val & ~holdout, relabel)
        zsl = rows.take(is_val, [i - len(tr_cls) for i in relabel])
        gz = rows.take(is_val | holdout, relabel)
        e_tr = torch.stack([class_emb[c] for c in tr_cls])
        e_va = torch.stack([class_emb[c] for c in va_cls])
        e_all = torch.cat([e_tr, e_va])
        image: dict[tuple[float, float, int], tuple[Tensor, Tensor]] = {}
        for cw in cfg.caption_weights:
            for tau in cfg.temperatures:
                model, run = train_map(
                    train, e_tr, caption_weight=cw, temperature=tau, cfg=cfg, seed=seed + 101 * j
                )
                for ep, state in run.states.items():
                    model.load_state_dict(state)
                    image[(cw, tau, ep)] = (
                        image_scores(model, zsl, e_va, cfg.fuse_caption),
                        image_scores(model, gz, e_all, cfg.fuse_caption),
                    )
        mean = train.caption.mean(0)
        caption = {}
        text = {}
        for c in cfg.centre_caption:
            centre = mean if c else None
            caption[c] = (
                caption_scores(zsl.caption, e_va, centre),
                caption_scores(gz.caption, e_all, centre),
            )
            if not any(cfg.text_weights):
                continue
            for kind in cfg.text_maps:
                tmap = fit_text_map(
                    train.caption - (mean if c else 0),
                    train.labels,
                    e_tr,
                    cfg.text_ridge,
                    kind,
                    cfg,
                )
                text[(c, kind)] = (
                    text_scores(zsl.caption, tmap, e_va, centre),
                    text_scores(gz.caption, tmap, e_all, centre),
                )
        out.append(
            InnerSplit(
                list(tr_cls),
                list(va_cls),
                zsl.labels,
                gz.labels,
                gz.labels >= len(tr_cls),
                image,
                caption,
                text,
            )
        )
    return out


def _choose(
    splits: Sequence[InnerSplit],
    cfg: AlignConfig,
    alphas: Sequence[float],
    centres: Sequence[bool],
    betas: Sequence[float] = (0.0,),
) -> tuple[Choice, dict[tuple[Any, ...], float]]:
    table: dict[tuple[Any, ...], float] = {}
    kinds = sorted({k for s in splits for _, k in s.text}, key=TEXT_MAPS.index) or ["ridge"]
    for key in splits[0].image:
        for centre in centres:
            for a in alphas:
                for b in betas:
                    if a + b > 1 + 1e-9:
                        continue
                    for kind in kinds if b else kinds[:1]:
                        accs = [
                            per_class_topk(
                                combine(
                                    s.image[key][0],
                                    s.caption[centre][0],
                                    a,
                                    s.text[(centre, kind)][0] if b else None,
                                    b,
                                ),
                                s.zsl_labels,
                            )
                            for s in splits
                        ]
                        table[(*key, a, centre, b, kind)] = sum(accs) / len(accs)
    # ties: fewer epochs, then the order of the grids
    best = max(table, key=lambda k: (round(table[k], 6), -k[2]))
    cw, tau, ep, a, centre, b, kind = best
    hs = {
        g: sum(
            _gzsl_h(
                calibrate(
                    combine(
                        s.image[(cw, tau, ep)][1],
                        s.caption[centre][1],
                        a,
                        s.text[(centre, kind)][1] if b else None,
                        b,
                    ),
                    len(s.train_classes),
                    g,
                ),
                s.gzsl_labels,
                s.gzsl_unseen,
            )
            for s in splits
        )
        / len(splits)
        for g in cfg.gammas
    }
    gamma = max(hs, key=lambda g: (round(hs[g], 6), -abs(g)))
    return Choice(cw, tau, ep, a, centre, gamma, table[best], hs[gamma], b, kind), table


def select(
    rows: PooledRows,
    holdout: Tensor,
    seen: Sequence[str],
    class_emb: Mapping[str, Tensor],
    cfg: AlignConfig,
    *,
    seed: int = 0,
) -> tuple[dict[str, Choice], dict[str, Any]]:
    """Choose every setting of each candidate on class-disjoint validation inside the seen classes:
    epochs, temperature, caption weight (and for the ensemble alpha and caption centring) by
    validation ZSL top-1, then the calibration offset gamma by validation GZSL H.
    Returns the choice per candidate and a log (validation classes, the grid's scores)."""
    splits = validation_splits(rows, holdout, seen, class_emb, cfg, seed=seed)
    centres = [c for c in cfg.centre_caption] or [False]
    image_only, t1 = _choose(splits, cfg, [1.0], [False] if False in centres else centres[:1])
    mix = [a for a in cfg.alphas if a < 1] or [1.0]
    ensemble, t2 = _choose(splits, cfg, mix, centres, cfg.text_weights or (0.0,))
    log = {
        "val_classes": [s.val_classes for s in splits],
        "caption_only_val_zsl": sum(
            per_class_topk(s.caption[centres[0]][0], s.zsl_labels) for s in splits
        )
        / len(splits)
        if not centres[0]
        else None,
        "grid": [
            {
                "caption_weight": k[0],
                "temperature": k[1],
                "epochs": k[2],
                "alpha": k[3],
                "centre_caption": k[4],
                "text_weight": k[5],
                "text_map": k[6],
                "val_zsl": v,
            }
            for k, v in {**t1, **t2}.items()
        ],
    }
    return {ALIGNED: image_only, ENSEMBLE: ensemble}, log


def pick_method(val_zsl: Mapping[str, float], val_h: Mapping[str, float]) -> str:
    """The candidate with the best validation ZSL top-1 (ties: the better validation H, then the
    one listed first in CANDIDATES)."""
    return max(
        CANDIDATES,
        key=lambda m: (round(val_zsl[m], 6), round(val_h[m], 6), -CANDIDATES.index(m)),
    )


class AlignedScorer(nn.Module):
    """A fitted candidate: the map, the caption centre and the chosen alpha, gamma and temperature.

    ``scores`` gives the ensemble score; with `seen` (a bool mask over the classes), the seen classes
    lose gamma (calibrated stacking), exactly as in the generalised evaluation.
    """

    caption_mean: Tensor
    text_map: Tensor

    def __init__(
        self,
        image_map: AlignedMap,
        caption_mean: Tensor,
        choice: Choice,
        *,
        fuse_caption: bool = False,
        text_map: Tensor | None = None,
        caption_sentences: bool = False,
    ) -> None:
        super().__init__()
        self.image_map = image_map
        d = caption_mean.shape[0]
        self.register_buffer("caption_mean", caption_mean.float().clone())
        self.register_buffer(
            "text_map", torch.zeros(d, d) if text_map is None else text_map.float().clone()
        )
        self.choice = choice
        self.fuse_caption = fuse_caption
        #: captions are scored as the mean of their sentences' vectors (`skyfuse.zeroshot.sentences`)
        self.caption_sentences = caption_sentences

    @property
    def needs_captions(self) -> bool:
        return self.choice.alpha < 1 or self.fuse_caption

    @torch.no_grad()
    def scores(
        self,
        image: Tensor,
        caption: Tensor | None,
        class_embeddings: Tensor,
        seen: Tensor | None = None,
    ) -> Tensor:
        """(M, C) scores: alpha x image-side cosine + beta x caption-side map cosine + the rest x
        caption cosine, minus gamma for seen classes when `seen` is given."""
        self.eval()
        a = self.choice.alpha
        cap_vec = None if caption is None else F.normalize(caption.float(), dim=-1)
        if self.needs_captions and cap_vec is None:
            raise BadInputError("this zero-shot model reads captions; give one caption per image")
        img = torch.zeros(image.shape[0], class_embeddings.shape[0])
        if a > 0:
            rows = PooledRows(
                image.float(), cap_vec if cap_vec is not None else image[:, :0], torch.zeros(0), []
            )
            img = image_scores(self.image_map, rows, class_embeddings, self.fuse_caption)
        cap = torch.zeros_like(img)
        text = None
        b = self.choice.text_weight
        if a < 1 and cap_vec is not None:
            centre = self.caption_mean if self.choice.centre_caption else None
            cap = caption_scores(cap_vec, class_embeddings, centre)
            if b:
                text = text_scores(cap_vec, self.text_map, class_embeddings, centre)
        s = combine(img, cap, a, text, b)
        return s if seen is None else calibrate(s, seen, self.choice.gamma)


def fit(
    rows: PooledRows,
    seen: Sequence[str],
    class_emb: Mapping[str, Tensor],
    choice: Choice,
    cfg: AlignConfig,
    *,
    seed: int = 0,
) -> AlignedScorer:
    """Refit the map (and the caption-side map) on every seen-class row with the chosen settings."""
    one = cfg.model_copy(update={"epochs": (choice.epochs,)})
    emb = torch.stack([class_emb[c] for c in seen])
    model, _ = train_map(
        rows,
        emb,
        caption_weight=choice.caption_weight,
        temperature=choice.temperature,
        cfg=one,
        seed=seed,
    )
    mean = rows.caption.mean(0)
    text_map = fit_text_map(
        rows.caption - (mean if choice.centre_caption else 0),
        rows.labels,
        emb,
        cfg.text_ridge,
        choice.text_map,
        cfg,
    )
    return AlignedScorer(
        model,
        mean,
        choice,
        fuse_caption=cfg.fuse_caption,
        text_map=text_map,
        caption_sentences=cfg.caption_sentences,
    )


def holdout_mask(rows: PooledRows, holdout_rels: Sequence[str]) -> Tensor:
    held = set(holdout_rels)
    return torch.tensor([r in held for r in rows.rels], dtype=torch.bool)


def split_holdout(
    rels_by_class: Mapping[str, Sequence[str]], frac: float, seed: str
) -> tuple[list[str], list[str]]:
    """(train rels, holdout rels): `frac` of each class's images held out (seeded)."""
    rng = random.Random(seed)
    train: list[str] = []
    held: list[str] = []
    for c in rels_by_class:
        rels = sorted(rels_by_class[c])
        rng.shuffle(rels)
        n = max(1, round(frac * len(rels))) if len(rels) > 2 else 0
        held += rels[:n]
        train += rels[n:]
    return train, held
