"""Zero-shot model bundles: save a trained scorer, load it, score any class names.

Two kinds, both in the `skyfuse.training.bundle` layout (bundle.json + model.safetensors):
- ``"scorer": "aligned"`` (what `skyfuse zeroshot` writes): the picked `skyfuse.zeroshot.aligned`
  candidate, i.e. the map of the pooled image vector into the sentence space, the mean training
  caption, and the validation-chosen alpha, gamma and temperature (under ``extra["choice"]``); its
  ``config`` describes the map, ``class_names`` are the classes it was trained on;
- the older fusion semantic head: an ordinary fusion bundle whose head outputs the sentence space
  (``class_names`` name sentence dimensions).
Either way ``extra`` holds ``{"task": "zeroshot", "seen_classes", "unseen_classes", "templates",
"classes" (name/phrase/descriptions), ...}``. New class names need no retraining: their embeddings
come from the bundle's text encoder.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from skyfuse.errors import BadInputError, CheckpointError
from skyfuse.zeroshot.aligned import AlignedMap, AlignedScorer, Choice
from skyfuse.zeroshot.classes import DEFAULT_TEMPLATES, ClassSpec, name_key, resolve_classes
from skyfuse.zeroshot.head import SemanticHead

TASK = "zeroshot"
ALIGNED_SCORER = "aligned"


def sentence_dim_names(dim: int) -> list[str]:
    """The bundle's ``class_names`` of a zero-shot head: one label per sentence-space output."""
    return [f"sentence_dim_{i:04d}" for i in range(dim)]


def save_zeroshot_model(
    out_dir: str | Path,
    head: SemanticHead | AlignedScorer,
    *,
    seen_classes: Sequence[str],
    unseen_classes: Sequence[str] = (),
    image_encoder: str,
    text_encoder: str,
    image_encoder_id: str | None = None,
    text_encoder_id: str | None = None,
    specs: Sequence[ClassSpec] = (),
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    prompt_id: str | None = None,
    extra: dict[str, Any] | None = None,
    caption_source: Mapping[str, Any] | None = None,
) -> Path:
    """Write the head as a bundle. `image_encoder` / `text_encoder` are registry names (rebuildable);
    the `*_id` strings (fingerprints) are checked on load when given."""
    from skyfuse.training.bundle import save_bundle

    meta: dict[str, Any] = {
        "task": TASK,
        "seen_classes": list(seen_classes),
        "unseen_classes": list(unseen_classes),
        "templates": list(templates),
        "classes": [s.to_dict() for s in specs],
        "image_encoder_name": image_encoder,
        "text_encoder_name": text_encoder,
        "image_encoder_id": image_encoder_id,
        "text_encoder_id": text_encoder_id,
        **(extra or {}),
    }
    if isinstance(head, AlignedScorer):
        return _save_aligned(Path(out_dir), head, meta, prompt_id, caption_source)
    cfg = head.fusion.config
    meta.update(
        logit_scale=float(head.scale.item()),
        residual_weight=float(head.residual_weight.item()),
        caption_residual=bool(head.caption_residual),
    )
    return save_bundle(
        Path(out_dir),
        head.fusion,
        cfg,
        class_names=sentence_dim_names(cfg.num_classes),
        image_encoder=image_encoder_id or image_encoder,
        text_encoder=text_encoder_id or text_encoder,
        prompt_id=prompt_id,
        extra=meta,
        caption_source=caption_source,
    )


def _aligned_config(scorer: AlignedScorer) -> dict[str, Any]:
    linears = [m for m in scorer.image_map.net if isinstance(m, torch.nn.Linear)]
    return {
        "scorer": ALIGNED_SCORER,
        "in_dim": int(scorer.image_map.mean.shape[0]),
        "out_dim": int(linears[-1].out_features),
        "hidden": int(linears[0].out_features) if len(linears) > 1 else 0,
        "fuse_caption": bool(scorer.fuse_caption),
        "caption_sentences": bool(scorer.caption_sentences),
        "dropout": max(
            [float(m.p) for m in scorer.image_map.net if isinstance(m, torch.nn.Dropout)] or [0.0]
        ),
    }


def _save_aligned(
    out_dir: Path,
    scorer: AlignedScorer,
    meta: dict[str, Any],
    prompt_id: str | None,
    caption_source: Mapping[str, Any] | None = None,
) -> Path:
    """The bundle layout for an aligned scorer, written to a temporary folder and renamed."""
    import json
    import shutil
    import tempfile

    from safetensors.torch import save_model

    from skyfuse.training.bundle import BUNDLE_FORMAT, MANIFEST, WEIGHTS

    meta = {**meta, "scorer": ALIGNED_SCORER, "choice": scorer.choice.to_dict()}
    manifest = {
        "format": BUNDLE_FORMAT,
        "version": 1,
        "config": _aligned_config(scorer),
        "class_names": list(meta["seen_classes"]),
        "image_encoder": meta.get("image_encoder_id") or meta["image_encoder_name"],
        "text_encoder": meta.get("text_encoder_id") or meta["text_encoder_name"],
        "prompt_id": prompt_id,
        "caption_source": dict(caption_source) if caption_source is not None else None,
        "extra": meta,
    }
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        save_model(scorer, str(tmp / WEIGHTS))
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.replace(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _load_aligned(model_dir: Path, data: dict[str, Any]) -> AlignedScorer:
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    from skyfuse.training.bundle import WEIGHTS

    cfg, meta = data["config"], data.get("extra") or {}
    try:
        choice = Choice(**meta["choice"])
        scorer = AlignedScorer(
            AlignedMap(
                int(cfg["in_dim"]),
                int(cfg["out_dim"]),
                int(cfg.get("hidden", 0)),
                float(cfg.get("dropout", 0.0)),
            ),
            torch.zeros(int(cfg["out_dim"])),
            choice,
            fuse_caption=bool(cfg.get("fuse_caption", False)),
            caption_sentences=bool(cfg.get("caption_sentences", False)),
        )
        load_model(scorer, str(model_dir / WEIGHTS), strict=True, device="cpu")
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{model_dir}: incomplete zero-shot bundle ({exc}); retrain"
        ) from None
    except (SafetensorError, RuntimeError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{model_dir}: weights do not load ({first}); retrain") from None
    return scorer.eval()


def is_zeroshot_bundle(model_dir: str | Path) -> bool:
    """True when `model_dir` holds a bundle written by `save_zeroshot_model` (cheap: JSON only)."""
    from skyfuse.training.bundle import read_manifest

    try:
        return (read_manifest(Path(model_dir)).get("extra") or {}).get("task") == TASK
    except CheckpointError:
        return False


class ZeroShotModel:
    """A trained zero-shot scorer with its encoders: scores images against any class names.

    `head` is an `AlignedScorer` (what `skyfuse zeroshot` saves) or an older `SemanticHead`.
    Encoders are built lazily from the names in the bundle, or passed in (tests, servers).
    """

    def __init__(
        self,
        head: SemanticHead | AlignedScorer,
        meta: dict[str, Any],
        *,
        image_encoder: Any | None = None,
        text_encoder: Any | None = None,
        prompt_id: str | None = None,
        path: Path | None = None,
    ) -> None:
        self.head = head.eval()
        self.meta = meta
        self.prompt_id = prompt_id
        self.path = path
        self.seen_classes: list[str] = list(meta.get("seen_classes") or [])
        self.unseen_classes: list[str] = list(meta.get("unseen_classes") or [])
        self.templates: list[str] = list(meta.get("templates") or DEFAULT_TEMPLATES)
        self._specs = [
            ClassSpec(c["name"], c.get("phrase") or c["name"], tuple(c.get("descriptions") or ()))
            for c in meta.get("classes") or []
        ]
        self._image_encoder = image_encoder and _checked(
            image_encoder, meta.get("image_encoder_id"), "image", path
        )
        self._text_encoder = text_encoder and _checked(
            text_encoder, meta.get("text_encoder_id"), "text", path
        )
        self._class_cache: dict[tuple[str, ...], torch.Tensor] = {}
        self._lock = threading.Lock()

    @property
    def needs_captions(self) -> bool:
        """Whether predictions read a caption (the caption score, a text-reading fusion or the
        caption residual)."""
        if isinstance(self.head, AlignedScorer):
            return self.head.needs_captions
        return bool(self.head.fusion.uses_text or self.head.caption_residual)

    @property
    def method(self) -> str:
        """The scoring method saved in the bundle (``head`` for an older fusion semantic head)."""
        return str(self.meta.get("method") or "head")

    @property
    def class_names(self) -> list[str]:
        """The classes known at training time (seen then unseen): the default label set."""
        return [*self.seen_classes, *self.unseen_classes]

    @property
    def image_encoder(self) -> Any:
        if self._image_encoder is None:
            from skyfuse.encoders import create_image_encoder

            self._image_encoder = _checked(
                create_image_encoder(self.meta.get("image_encoder_name") or "efficientnet-lite0"),
                self.meta.get("image_encoder_id"),
                "image",
                self.path,
            )
        return self._image_encoder

    @property
    def text_encoder(self) -> Any:
        if self._text_encoder is None:
            from skyfuse.encoders import create_text_encoder

            self._text_encoder = _checked(
                create_text_encoder(self.meta.get("text_encoder_name") or "minilm"),
                self.meta.get("text_encoder_id"),
                "text",
                self.path,
            )
        return self._text_encoder

    def class_specs(self, class_names: Sequence[str]) -> list[ClassSpec]:
        """Descriptions saved with the model first, then skyfuse's shipped ones, else the name."""
        return resolve_classes(class_names, self._specs)

    def class_embeddings(self, class_names: Sequence[str]) -> torch.Tensor:
        """(C, D) embeddings of `class_names` (cached per list)."""
        from skyfuse.zeroshot.embeddings import class_embeddings

        key = tuple(class_names)
        with self._lock:
            if key not in self._class_cache:
                specs = self.class_specs(class_names)
                self._class_cache[key] = class_embeddings(self.text_encoder, specs, self.templates)
            return self._class_cache[key]

    @torch.no_grad()
    def scores(
        self,
        images: Sequence[Image.Image],
        captions: Sequence[str] | None,
        class_names: Sequence[str],
    ) -> torch.Tensor:
        """(B, C) logits of each image against `class_names`: for an aligned scorer the calibrated
        ensemble score (names the model was trained on lose gamma, as in the generalised
        evaluation) over its temperature; for a semantic head, temperature x cosine."""
        images = list(images)
        if not class_names:
            raise BadInputError("no class names to score; pass --classes 'name1,name2,...'")
        if captions is None:
            if self.needs_captions:
                raise BadInputError(
                    "this zero-shot model reads captions; give one caption per image (or a captioner)"
                )
            captions = [""] * len(images)
        if len(captions) != len(images):
            raise BadInputError(
                f"{len(captions)} captions for {len(images)} images; give one per image"
            )
        classes = self.class_embeddings(class_names)
        enc_i = self.image_encoder
        image = enc_i.encode(enc_i.preprocess(images))
        if isinstance(self.head, AlignedScorer):
            texts = [str(c or "") for c in captions]
            text_pooled = None
            if self.needs_captions and self.head.caption_sentences:
                from skyfuse.zeroshot.sentences import sentence_mean_vectors

                text_pooled = sentence_mean_vectors(texts, self.text_encoder)
            elif self.needs_captions:
                text_pooled = self.text_encoder.encode_texts(texts).pooled
            trained = {name_key(c) for c in self.seen_classes}
            seen = torch.tensor([name_key(c) in trained for c in class_names], dtype=torch.bool)
            s = self.head.scores(image.pooled.float(), text_pooled, classes, seen)
            return s / self.head.choice.temperature
        text = self.text_encoder.encode_texts([str(c or "") for c in captions])
        fusion = self.head.fusion
        return self.head(
            image.tokens.float() if fusion.uses_image else None,
            image.mask if fusion.uses_image else None,
            text.tokens.float() if fusion.uses_text else None,
            text.mask if fusion.uses_text else None,
            text.pooled.float(),
            classes,
        )

    def predict(
        self,
        images: Sequence[Image.Image],
        captions: Sequence[str] | None,
        class_names: Sequence[str] | None = None,
        top_k: int = 5,
    ) -> list[list[tuple[str, float]]]:
        """Per image, the `top_k` (class name, probability) pairs, best first (softmax over classes).

        `class_names` may be any names, seen in training or not; default: the training fold's classes.
        """
        names = list(class_names) if class_names else self.class_names
        probs = torch.softmax(self.scores(images, captions, names), dim=-1)
        k = max(1, min(int(top_k), len(names)))
        values, indices = probs.topk(k, dim=-1)
        return [
            [(names[i], float(v)) for v, i in zip(vs, ix, strict=True)]
            for vs, ix in zip(values.tolist(), indices.tolist(), strict=True)
        ]


def _checked(encoder: Any, expected: str | None, kind: str, path: Path | None) -> Any:
    got = getattr(encoder, "encoder_id", None)
    if expected and got and got != expected:
        raise CheckpointError(
            f"{path}: trained with {kind} encoder {expected!r} but {got!r} was built;"
            " install the same encoder weights"
        )
    return encoder


def load_zeroshot_model(
    model_dir: str | Path, *, image_encoder: Any | None = None, text_encoder: Any | None = None
) -> ZeroShotModel:
    """Load a bundle written by `save_zeroshot_model` (encoders are built on first use)."""
    from skyfuse.training.bundle import load_bundle, read_manifest

    data = read_manifest(Path(model_dir))
    if (data.get("extra") or {}).get("task") == TASK and (data.get("config") or {}).get(
        "scorer"
    ) == ALIGNED_SCORER:
        path = Path(model_dir)
        path = path.parent if path.is_file() else path
        return ZeroShotModel(
            _load_aligned(path, data),
            dict(data["extra"]),
            image_encoder=image_encoder,
            text_encoder=text_encoder,
            prompt_id=data.get("prompt_id"),
            path=path,
        )
    bundle = load_bundle(Path(model_dir))
    meta = dict(bundle.extra)
    if meta.get("task") != TASK:
        raise CheckpointError(
            f"{model_dir}: a classification bundle, not a zero-shot one;"
            " train one with `skyfuse zeroshot ... --out DIR` (it writes DIR/model)"
        )
    head = SemanticHead(
        bundle.model,  # type: ignore[arg-type]
        caption_residual=bool(meta.get("caption_residual", True)),
        logit_scale=float(meta.get("logit_scale", 20.0)),
        init_gain=1.0,
        residual_weight=float(meta.get("residual_weight", 1.0)),
    )
    return ZeroShotModel(
        head,
        meta,
        image_encoder=image_encoder,
        text_encoder=text_encoder,
        prompt_id=bundle.prompt_id,
        path=bundle.path,
    )
