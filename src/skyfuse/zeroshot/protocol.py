"""The zero-shot protocol end to end: folds, features, head training, scoring, metrics over folds.

For each fold and each caption setting (``raw`` and leakage-``masked``) the semantic head is trained
on the seen classes and scored two ways:
- ZSL: unseen-class test images against the unseen classes only (top-1, top-5);
- GZSL: held-out seen-class and all unseen-class images against every class (seen, unseen, H).
The caption-only baseline (and CLIP when an open_clip encoder is named) is scored on the same images.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from skyfuse.errors import BadInputError, ConfigError
from skyfuse.models import FusionConfig
from skyfuse.zeroshot.baselines import caption_only_scores, clip_scores
from skyfuse.zeroshot.checks import check_fusion_settings, check_out_dir, fusion_config
from skyfuse.zeroshot.classes import DEFAULT_TEMPLATES, ClassSpec, resolve_classes
from skyfuse.zeroshot.folds import ZeroShotFold, make_folds
from skyfuse.zeroshot.metrics import aggregate, gzsl_metrics, zsl_metrics
from skyfuse.zeroshot.task import (
    FeatureRows,
    HeadTrainConfig,
    ZeroShotData,
    score,
    train_semantic_head,
)

CAPTION_SETTINGS = ("raw", "masked")
Log = Callable[[str], None]


@dataclass
class ZeroShotSettings:
    """Everything one `run_zeroshot` call needs besides the data (saved into metrics.json)."""

    model: str = "dual"
    unseen: float = 0.25
    folds: int = 3
    seed: int = 0
    test: float = 0.2
    val: float = 0.1
    captions: Sequence[str] = CAPTION_SETTINGS
    templates: Sequence[str] = DEFAULT_TEMPLATES
    fusion: dict[str, Any] = field(default_factory=dict)
    train: HeadTrainConfig = field(default_factory=HeadTrainConfig)
    image_grid: int | None = None
    save_fold_models: bool = False
    final_model: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "unseen": self.unseen,
            "folds": self.folds,
            "seed": self.seed,
            "test": self.test,
            "val": self.val,
            "captions": list(self.captions),
            "templates": list(self.templates),
            "fusion": dict(self.fusion),
            "image_grid": self.image_grid,
            "train": self.train.model_dump(mode="json"),
        }


def pool_image_tokens(features: Any, grid: int) -> Any:
    """Average a square token grid (e.g. EfficientNet's 7x7) down to grid x grid tokens.

    Why: on a CPU the fusion's cost grows with the number of image tokens; 2x2 or 3x3 regions keep
    the layout coarsely and make a K-fold run minutes instead of hours.
    """
    import dataclasses

    import torch.nn.functional as F

    tokens = features.image_tokens
    b, n, d = tokens.shape
    side = round(n**0.5)
    if side * side != n or not bool(features.image_mask.all()):
        raise ConfigError(
            f"--image-grid needs a square grid of image tokens; this encoder gives {n} (drop the option)"
        )
    if grid >= side:
        return features
    pooled = F.adaptive_avg_pool2d(tokens.float().transpose(1, 2).reshape(b, d, side, side), grid)
    return dataclasses.replace(
        features,
        image_tokens=pooled.flatten(2).transpose(1, 2).to(tokens.dtype).contiguous(),
        image_mask=torch.ones(b, grid * grid, dtype=torch.bool),
    )


def fusion_base(settings: ZeroShotSettings, features: FeatureRows) -> FusionConfig:
    """The fusion settings for these features (the head's width is set by SemanticHead)."""
    return fusion_config(
        {
            **settings.fusion,
            "model": settings.model,
            "image_dim": int(features.image_tokens.shape[-1]),
            "text_dim": int(features.text_tokens.shape[-1]),
            "num_classes": int(features.text_tokens.shape[-1]),
        }
    )


def evaluate_scores(
    zsl_scores: torch.Tensor,
    zsl_labels: torch.Tensor,
    gzsl_scores: torch.Tensor,
    gzsl_labels: torch.Tensor,
    n_seen: int,
) -> dict[str, dict[str, float]]:
    """Both settings' metrics; GZSL labels index seen classes first, so label >= n_seen is unseen."""
    return {
        "zsl": zsl_metrics(zsl_scores, zsl_labels),
        "gzsl": gzsl_metrics(gzsl_scores, gzsl_labels, gzsl_labels >= n_seen),
    }


def _fold_data(
    features: FeatureRows, fold: ZeroShotFold
) -> tuple[ZeroShotData, ZeroShotData | None, ZeroShotData, ZeroShotData]:
    train = ZeroShotData.from_features(features, fold.train, fold.seen)
    val = ZeroShotData.from_features(features, fold.val, fold.seen) if fold.val else None
    unseen = ZeroShotData.from_features(features, fold.test_unseen, fold.unseen)
    gzsl = ZeroShotData.from_features(features, fold.test_seen + fold.test_unseen, fold.classes)
    return train, val, unseen, gzsl


def run_fold(
    features: FeatureRows,
    fold: ZeroShotFold,
    class_embeddings: Mapping[str, torch.Tensor],
    settings: ZeroShotSettings,
    fusion_base: FusionConfig,
    *,
    extra_scores: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
) -> tuple[dict[str, Any], Any]:
    """Train and score one fold for one caption setting: ({"head": m, "caption_only": m, ...}, head)."""
    fold.check_disjoint()
    train, val, unseen, gzsl = _fold_data(features, fold)
    e_seen = torch.stack([class_embeddings[c] for c in fold.seen])
    e_unseen = torch.stack([class_embeddings[c] for c in fold.unseen])
    e_all = torch.cat([e_seen, e_unseen])
    cfg = settings.train.model_copy(update={"seed": settings.train.seed + fold.index})
    head, history = train_semantic_head(fusion_base, train, val, e_seen, cfg)
    n_seen = len(fold.seen)
    scale = float(head.scale.item())
    head_zsl, head_gzsl = score(head, unseen, e_unseen), score(head, gzsl, e_all)
    cap_zsl = caption_only_scores(unseen.caption_vec, e_unseen)
    cap_gzsl = caption_only_scores(gzsl.caption_vec, e_all)
    out: dict[str, Any] = {
        "head": evaluate_scores(head_zsl, unseen.labels, head_gzsl, gzsl.labels, n_seen),
        "caption_only": evaluate_scores(cap_zsl, unseen.labels, cap_gzsl, gzsl.labels, n_seen),
        # score-level ensemble: the head's cosine plus the untrained caption cosine (class-agnostic)
        "head_plus_caption": evaluate_scores(
            head_zsl / scale + cap_zsl,
            unseen.labels,
            head_gzsl / scale + cap_gzsl,
            gzsl.labels,
            n_seen,
        ),
        "epochs": len(history),
    }
    for name, by_rel in (extra_scores or {}).items():
        full = torch.stack([by_rel[r] for r in gzsl.rels])
        cols_all = [list(class_embeddings).index(c) for c in fold.classes]
        cols_unseen = [list(class_embeddings).index(c) for c in fold.unseen]
        zsl_rows = torch.stack([by_rel[r] for r in unseen.rels])
        out[name] = evaluate_scores(
            zsl_rows[:, cols_unseen], unseen.labels, full[:, cols_all], gzsl.labels, n_seen
        )
    return out, head


def train_final_head(
    features: FeatureRows,
    rels_by_class: Mapping[str, Sequence[str]],
    class_embeddings: Mapping[str, torch.Tensor],
    settings: ZeroShotSettings,
) -> Any:
    """A head trained on every class (val carved per class) for predicting new class names."""
    import random

    classes = list(rels_by_class)
    train: list[str] = []
    val: list[str] = []
    rng = random.Random(f"{settings.seed}:final")
    for c in classes:
        rels = sorted(rels_by_class[c])
        rng.shuffle(rels)
        n_val = max(1, round(settings.val * len(rels))) if settings.val > 0 and len(rels) > 2 else 0
        val += rels[:n_val]
        train += rels[n_val:]
    base = fusion_base(settings, features)
    emb = torch.stack([class_embeddings[c] for c in classes])
    head, _ = train_semantic_head(
        base,
        ZeroShotData.from_features(features, train, classes),
        ZeroShotData.from_features(features, val, classes) if val else None,
        emb,
        settings.train,
    )
    return head


def summarise(per_fold: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-method mean ± std over folds: {"head": {"zsl": {"top1": {"mean", "std", "folds"}}}, ...}."""
    methods = [k for k in per_fold[0] if isinstance(per_fold[0][k], dict)]
    return {m: aggregate([f[m] for f in per_fold]) for m in methods}


def run_zeroshot(
    root: str | Path,
    captions: Mapping[str, str],
    out: str | Path,
    settings: ZeroShotSettings | None = None,
    *,
    image_encoder: str = "efficientnet-lite0",
    text_encoder: str = "minilm",
    class_overrides: Sequence[ClassSpec] = (),
    clip_encoder: str | None = None,
    cache_dir: str | Path | None = None,
    batch_size: int = 32,
    log: Log | None = None,
    show_progress: bool = False,
    caption_source: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole protocol on a scene folder; writes DIR/folds/*.json, DIR/models/*, DIR/metrics.json
    and DIR/metrics.md, and returns the metrics dict (layout: see docs/zeroshot.md)."""
    from skyfuse.data.folder import SceneFolder
    from skyfuse.encoders import create_image_encoder, create_text_encoder, extract_features
    from skyfuse.zeroshot.embeddings import class_embeddings as embed_classes
    from skyfuse.zeroshot.model import save_zeroshot_model
    from skyfuse.zeroshot.report import metrics_markdown, write_metrics

    settings = settings or ZeroShotSettings()
    say = log or (lambda _msg: None)
    out = Path(out)
    unknown = [c for c in settings.captions if c not in CAPTION_SETTINGS]
    if unknown or not settings.captions:
        raise ConfigError(f"caption settings must be among {CAPTION_SETTINGS}, got {unknown}")
    check_fusion_settings(settings.model, settings.fusion)
    check_out_dir(out)
    folder = SceneFolder(root)
    missing = [s.rel for s in folder.samples if not str(captions.get(s.rel, "")).strip()]
    if missing:
        raise BadInputError(
            f"{folder.root}: {len(missing)} of {len(folder)} images have no caption (e.g. {missing[0]});"
            " caption them with `skyfuse caption` or pass the matching --captions file"
        )
    ienc = create_image_encoder(image_encoder)
    tenc = create_text_encoder(text_encoder)
    if cache_dir is None:
        from skyfuse.encoders.cache import default_cache_dir

        cache_dir = default_cache_dir()
    cache = Path(cache_dir)
    features: dict[str, Any] = {}
    for setting in settings.captions:
        texts = dict(captions)
        if setting == "masked":
            from skyfuse.captioning import mask_captions

            texts = mask_captions(texts, folder.classes)
        say(f"features ({setting} captions)")
        features[setting] = extract_features(
            folder.samples,
            texts,
            ienc,
            tenc,
            cache_dir=cache,
            batch_size=batch_size,
            show_progress=show_progress,
        )
        if settings.image_grid:
            features[setting] = pool_image_tokens(features[setting], settings.image_grid)
    usable = set.intersection(*(set(f.rels) for f in features.values()))
    skipped = [s.rel for s in folder.samples if s.rel not in usable]
    if skipped:
        say(f"{len(skipped)} image(s) left out (unreadable), e.g. {skipped[0]}")
    rels_by_class: dict[str, list[str]] = {c: [] for c in folder.classes}
    for s in folder.samples:
        if s.rel in usable:
            rels_by_class[s.class_name].append(s.rel)
    empty = [c for c, rels in rels_by_class.items() if not rels]
    if empty:
        raise BadInputError(f"{folder.root}: no readable images in class(es) {', '.join(empty)}")
    folds = make_folds(
        rels_by_class,
        unseen=settings.unseen,
        folds=settings.folds,
        seed=settings.seed,
        test=settings.test,
        val=settings.val,
    )
    for fold in folds:
        fold.save(out / "folds" / f"fold_{fold.index}.json")
    say(f"{len(folds)} fold(s) over {len(folder.classes)} classes written to {out / 'folds'}")

    specs = resolve_classes(folder.classes, class_overrides)
    emb = embed_classes(tenc, specs, settings.templates)
    class_emb = {c: emb[i] for i, c in enumerate(folder.classes)}

    extra: dict[str, dict[str, torch.Tensor]] = {}
    if clip_encoder:
        say(f"CLIP baseline with {clip_encoder}")
        paths = [str(s.path) for s in folder.samples if s.rel in usable]
        clip = clip_scores(clip_encoder, paths, specs, settings.templates)
        rels = [s.rel for s in folder.samples if s.rel in usable]
        extra["clip"] = {r: clip[i] for i, r in enumerate(rels)}

    results: dict[str, Any] = {}
    for setting in settings.captions:
        feats = features[setting]
        base = fusion_base(settings, feats)
        per_fold = []
        for fold in folds:
            res, head = run_fold(feats, fold, class_emb, settings, base, extra_scores=extra)
            per_fold.append(res)
            say(
                f"[{setting}] fold {fold.index}: ZSL top-1 head {res['head']['zsl']['top1']:.3f}"
                f" / caption-only {res['caption_only']['zsl']['top1']:.3f};"
                f" GZSL H {res['head']['gzsl']['h']:.3f} / {res['caption_only']['gzsl']['h']:.3f}"
            )
            if settings.save_fold_models:
                save_zeroshot_model(
                    out / "models" / f"{setting}-fold{fold.index}",
                    head,
                    seen_classes=fold.seen,
                    unseen_classes=fold.unseen,
                    image_encoder=image_encoder,
                    text_encoder=text_encoder,
                    image_encoder_id=getattr(ienc, "encoder_id", None),
                    text_encoder_id=getattr(tenc, "encoder_id", None),
                    specs=specs,
                    templates=settings.templates,
                    extra={"fold": fold.index, "captions": setting},
                    caption_source=caption_source,
                )
        summary = summarise(per_fold)
        summary["per_fold"] = per_fold
        results[setting] = summary

    metrics = build_metrics(results, settings, folds, folder.classes, image_encoder, text_encoder)
    if settings.final_model:
        primary = metrics["captions"]
        say(
            f"final model on all {len(folder.classes)} classes ({primary} captions) -> {out / 'model'}"
        )
        head = train_final_head(features[primary], rels_by_class, class_emb, settings)
        save_zeroshot_model(
            out / "model",
            head,
            seen_classes=folder.classes,
            image_encoder=image_encoder,
            text_encoder=text_encoder,
            image_encoder_id=getattr(ienc, "encoder_id", None),
            text_encoder_id=getattr(tenc, "encoder_id", None),
            specs=specs,
            templates=settings.templates,
            extra={"captions": primary, "trained_on": "all classes", "model": settings.model},
            caption_source=caption_source,
        )
        metrics["model_dir"] = str(out / "model")
    write_metrics(out, metrics)
    say(metrics_markdown(metrics))
    return metrics


def build_metrics(
    results: Mapping[str, Mapping[str, Any]],
    settings: ZeroShotSettings,
    folds: Sequence[ZeroShotFold],
    classes: Sequence[str],
    image_encoder: str,
    text_encoder: str,
) -> dict[str, Any]:
    """The metrics.json layout: the head's numbers at the top level (raw captions when run),
    ``baselines`` beside them, and each caption setting in full under ``settings``."""
    primary = "raw" if "raw" in results else next(iter(results))
    top = results[primary]
    return {
        "format": "skyfuse-zeroshot-metrics/1",
        "captions": primary,
        "zsl": top["head"]["zsl"],
        "gzsl": top["head"]["gzsl"],
        "baselines": {k: v for k, v in top.items() if k not in ("head", "per_fold")},
        "settings": {
            k: {m: v for m, v in r.items() if m != "per_fold"} for k, r in results.items()
        },
        "per_fold": {k: r["per_fold"] for k, r in results.items()},
        "folds": [
            {"index": f.index, "seen": f.seen, "unseen": f.unseen, "fingerprint": f.fingerprint()}
            for f in folds
        ],
        "classes": list(classes),
        "image_encoder": image_encoder,
        "text_encoder": text_encoder,
        "config": settings.to_dict(),
    }
