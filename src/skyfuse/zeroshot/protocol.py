"""The zero-shot protocol end to end: folds, features, training, scoring, metrics over folds.

For each fold and each caption setting (``raw`` and leakage-``masked``) the trained candidates
(`skyfuse.zeroshot.aligned`: the image side aligned to captions and class embeddings, alone and in an
ensemble with the caption score) have every setting chosen on validation classes held out from the
seen classes, are refitted on all seen classes and scored two ways:
- ZSL: unseen-class test images against the unseen classes only (top-1, top-5);
- GZSL: held-out seen-class and all unseen-class images against every class (seen, unseen, H), with
  the calibration offset chosen on validation classes.
The headline method is the candidate with the best validation score over folds and settings (never a
test number). The caption-only baseline (and CLIP when an open_clip encoder is named, and the older
fusion semantic head with ``fusion_head=True``) is scored on the same images.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from skyfuse.errors import BadInputError, ConfigError
from skyfuse.models import FusionConfig
from skyfuse.zeroshot import aligned as al
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
    align: al.AlignConfig = field(default_factory=al.AlignConfig)
    fusion_head: bool = False
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
            "align": self.align.model_dump(mode="json"),
            "fusion_head": self.fusion_head,
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
    *,
    extra_scores: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
    caption_vectors: torch.Tensor | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Select, refit and score one fold for one caption setting.

    `caption_vectors` (one row per ``features.rels``, e.g. sentence means) replace
    ``features.text_pooled`` for the trained candidates; the caption-only baseline always scores
    ``features.text_pooled`` (the whole caption encoded at once).
    Returns ({method: {"zsl": ..., "gzsl": ...}, ..., "selection": ...}, {method: fitted model}).
    """
    fold.check_disjoint()
    e_seen = torch.stack([class_embeddings[c] for c in fold.seen])
    e_unseen = torch.stack([class_embeddings[c] for c in fold.unseen])
    e_all = torch.cat([e_seen, e_unseen])
    n_seen = len(fold.seen)
    # selection and refit see seen-class images only (train + val), never test images
    rows = al.PooledRows.from_features(features, fold.train + fold.val, fold.seen, caption_vectors)
    seed = settings.align.seed + settings.seed + fold.index
    choices, log = al.select(
        rows,
        al.holdout_mask(rows, fold.val),
        fold.seen,
        class_embeddings,
        settings.align,
        seed=seed,
    )
    unseen = al.PooledRows.from_features(features, fold.test_unseen, fold.unseen, caption_vectors)
    gzsl_rels = fold.test_seen + fold.test_unseen
    gzsl = al.PooledRows.from_features(features, gzsl_rels, fold.classes, caption_vectors)
    seen_mask = torch.arange(len(fold.classes)) < n_seen
    joined_unseen = al.PooledRows.from_features(features, fold.test_unseen, fold.unseen).caption
    joined_gzsl = al.PooledRows.from_features(features, gzsl_rels, fold.classes).caption
    cap_zsl = caption_only_scores(joined_unseen, e_unseen)
    cap_gzsl = caption_only_scores(joined_gzsl, e_all)
    out: dict[str, Any] = {
        "caption_only": evaluate_scores(cap_zsl, unseen.labels, cap_gzsl, gzsl.labels, n_seen)
    }
    models: dict[str, Any] = {}
    for name, choice in choices.items():
        scorer = al.fit(rows, fold.seen, class_embeddings, choice, settings.align, seed=seed)
        models[name] = scorer
        out[name] = evaluate_scores(
            scorer.scores(unseen.image, unseen.caption, e_unseen),
            unseen.labels,
            scorer.scores(gzsl.image, gzsl.caption, e_all, seen_mask),
            gzsl.labels,
            n_seen,
        )
    out["selection"] = {
        "choices": {k: v.to_dict() for k, v in choices.items()},
        "val_classes": log["val_classes"],
        "caption_only_val_zsl": log["caption_only_val_zsl"],
    }
    if settings.fusion_head:
        out.update(_fusion_head_scores(features, fold, e_seen, e_unseen, e_all, settings, models))
    for name, by_rel in (extra_scores or {}).items():
        full = torch.stack([by_rel[r] for r in gzsl.rels])
        cols_all = [list(class_embeddings).index(c) for c in fold.classes]
        cols_unseen = [list(class_embeddings).index(c) for c in fold.unseen]
        zsl_rows = torch.stack([by_rel[r] for r in unseen.rels])
        out[name] = evaluate_scores(
            zsl_rows[:, cols_unseen], unseen.labels, full[:, cols_all], gzsl.labels, n_seen
        )
    return out, models


def _fusion_head_scores(
    features: FeatureRows,
    fold: ZeroShotFold,
    e_seen: torch.Tensor,
    e_unseen: torch.Tensor,
    e_all: torch.Tensor,
    settings: ZeroShotSettings,
    models: dict[str, Any],
) -> dict[str, Any]:
    """The older fusion semantic head (early stopping on seen-class validation loss) and its sum
    with the caption cosine: listed for comparison, never a candidate for the headline."""
    train, val, unseen, gzsl = _fold_data(features, fold)
    cfg = settings.train.model_copy(update={"seed": settings.train.seed + fold.index})
    head, _ = train_semantic_head(fusion_base(settings, features), train, val, e_seen, cfg)
    models["head"] = head
    n_seen = len(fold.seen)
    scale = float(head.scale.item())
    head_zsl, head_gzsl = score(head, unseen, e_unseen), score(head, gzsl, e_all)
    cap_zsl = caption_only_scores(unseen.caption_vec, e_unseen)
    cap_gzsl = caption_only_scores(gzsl.caption_vec, e_all)
    return {
        "head": evaluate_scores(head_zsl, unseen.labels, head_gzsl, gzsl.labels, n_seen),
        "head_plus_caption": evaluate_scores(
            head_zsl / scale + cap_zsl,
            unseen.labels,
            head_gzsl / scale + cap_gzsl,
            gzsl.labels,
            n_seen,
        ),
    }


def train_final_model(
    features: FeatureRows,
    rels_by_class: Mapping[str, Sequence[str]],
    class_embeddings: Mapping[str, torch.Tensor],
    settings: ZeroShotSettings,
    method: str,
    caption_vectors: torch.Tensor | None = None,
) -> tuple[al.AlignedScorer, dict[str, Any]]:
    """The picked method trained on every class, its settings chosen the same way as in a fold:
    on class-disjoint inner splits (here of all classes), then refitted on all images."""
    classes = list(rels_by_class)
    _, held = al.split_holdout(rels_by_class, settings.val or 0.1, f"{settings.seed}:final")
    rows = al.PooledRows.from_features(
        features, [r for c in classes for r in rels_by_class[c]], classes, caption_vectors
    )
    seed = settings.align.seed + settings.seed + 1000
    choices, log = al.select(
        rows, al.holdout_mask(rows, held), classes, class_embeddings, settings.align, seed=seed
    )
    scorer = al.fit(rows, classes, class_embeddings, choices[method], settings.align, seed=seed)
    return scorer, {"choice": choices[method].to_dict(), "val_classes": log["val_classes"]}


def is_method(value: Any) -> bool:
    return isinstance(value, dict) and "zsl" in value and "gzsl" in value


def summarise(per_fold: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-method mean ± std over folds: {"aligned": {"zsl": {"top1": {"mean", "std", "folds"}}}, ...}."""
    methods = [k for k in per_fold[0] if is_method(per_fold[0][k])]
    return {m: aggregate([f[m] for f in per_fold]) for m in methods}


def pick(results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The headline method: the candidate with the best validation ZSL top-1, averaged over every
    fold and caption setting (validation classes only; no test number enters)."""
    val_zsl: dict[str, float] = {}
    val_h: dict[str, float] = {}
    for m in al.CANDIDATES:
        choices = [f["selection"]["choices"][m] for r in results.values() for f in r["per_fold"]]
        val_zsl[m] = sum(c["val_zsl"] for c in choices) / len(choices)
        val_h[m] = sum(c["val_h"] for c in choices) / len(choices)
    method = al.pick_method(val_zsl, val_h)
    others = ", ".join(
        f"{al.METHOD_LABELS[m]} {100 * val_zsl[m]:.1f} %" for m in al.CANDIDATES if m != method
    )
    why = (
        f"best mean validation ZSL top-1 on seen classes held out inside each fold"
        f" ({100 * val_zsl[method]:.1f} % vs {others})"
    )
    return {"method": method, "why": why, "val_zsl": val_zsl, "val_h": val_h}


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
    sentence_vectors: dict[str, torch.Tensor] = {}
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
        if settings.align.caption_sentences:
            from skyfuse.zeroshot.sentences import sentence_mean_vectors

            sentence_vectors[setting] = sentence_mean_vectors(
                [texts[r] for r in features[setting].rels], tenc, cache_dir=cache
            )
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
    fold_models: dict[str, list[dict[str, Any]]] = {}
    for setting in settings.captions:
        feats = features[setting]
        per_fold = []
        for fold in folds:
            res, models = run_fold(
                feats,
                fold,
                class_emb,
                settings,
                extra_scores=extra,
                caption_vectors=sentence_vectors.get(setting),
            )
            per_fold.append(res)
            fold_models.setdefault(setting, []).append(models)
            best = {m: res[m]["zsl"]["top1"] for m in al.CANDIDATES}
            say(
                f"{setting} captions, fold {fold.index}: ZSL top-1 "
                + ", ".join(f"{m} {v:.3f}" for m, v in best.items())
                + f" / caption-only {res['caption_only']['zsl']['top1']:.3f}; GZSL H "
                + ", ".join(f"{m} {res[m]['gzsl']['h']:.3f}" for m in al.CANDIDATES)
                + f" / {res['caption_only']['gzsl']['h']:.3f}"
            )
        summary = summarise(per_fold)
        summary["per_fold"] = per_fold
        results[setting] = summary

    picked = pick(results)
    method = picked["method"]
    say(f"picked {method}: {picked['why']}")
    saver: dict[str, Any] = {
        "image_encoder": image_encoder,
        "text_encoder": text_encoder,
        "image_encoder_id": getattr(ienc, "encoder_id", None),
        "text_encoder_id": getattr(tenc, "encoder_id", None),
        "specs": specs,
        "templates": settings.templates,
        "caption_source": caption_source,
    }
    if settings.save_fold_models:
        for setting, per in fold_models.items():
            for fold, models in zip(folds, per, strict=True):
                save_zeroshot_model(
                    out / "models" / f"{setting}-fold{fold.index}",
                    models[method],
                    seen_classes=fold.seen,
                    unseen_classes=fold.unseen,
                    extra={"fold": fold.index, "captions": setting, "method": method},
                    **saver,
                )
    metrics = build_metrics(results, settings, folds, folder.classes, image_encoder, text_encoder)
    metrics["method"] = method
    metrics["selection"] = picked
    metrics["zsl"] = results[metrics["captions"]][method]["zsl"]
    metrics["gzsl"] = results[metrics["captions"]][method]["gzsl"]
    metrics["baselines"] = {
        k: v for k, v in results[metrics["captions"]].items() if k not in (method, "per_fold")
    }
    if settings.final_model:
        primary = metrics["captions"]
        say(
            f"final model ({method}) on all {len(folder.classes)} classes ({primary} captions)"
            f" -> {out / 'model'}"
        )
        scorer, final = train_final_model(
            features[primary],
            rels_by_class,
            class_emb,
            settings,
            method,
            sentence_vectors.get(primary),
        )
        save_zeroshot_model(
            out / "model",
            scorer,
            seen_classes=folder.classes,
            extra={"captions": primary, "trained_on": "all classes", "method": method, **final},
            **saver,
        )
        metrics["model_dir"] = str(out / "model")
        metrics["final_model"] = final
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
    """The metrics.json layout: each caption setting in full under ``settings`` (run_zeroshot then puts
    the picked method's numbers at the top level, raw captions when run, ``baselines`` beside them)."""
    primary = "raw" if "raw" in results else next(iter(results))
    top = results[primary]
    return {
        "format": "skyfuse-zeroshot-metrics/1",
        "captions": primary,
        "zsl": top["caption_only"]["zsl"],
        "gzsl": top["caption_only"]["gzsl"],
        "baselines": {k: v for k, v in top.items() if k != "per_fold"},
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
