"""Zero-shot model bundles: save a trained semantic head, load it, score any class names.

A zero-shot bundle is an ordinary `skyfuse.training.bundle` (config + safetensors + JSON) whose fusion
head outputs the sentence space; its ``class_names`` therefore name sentence dimensions, and the
classes live in ``extra``: ``{"task": "zeroshot", "seen_classes", "unseen_classes", "logit_scale",
"residual_weight", "caption_residual", "templates", "classes" (name/phrase/descriptions), ...}``.
New class names need no retraining: their embeddings come from the bundle's text encoder.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from skyfuse.errors import BadInputError, CheckpointError
from skyfuse.zeroshot.classes import DEFAULT_TEMPLATES, ClassSpec, resolve_classes
from skyfuse.zeroshot.head import SemanticHead

TASK = "zeroshot"


def sentence_dim_names(dim: int) -> list[str]:
    """The bundle's ``class_names`` of a zero-shot head: one label per sentence-space output."""
    return [f"sentence_dim_{i:04d}" for i in range(dim)]


def save_zeroshot_model(
    out_dir: str | Path,
    head: SemanticHead,
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

    cfg = head.fusion.config
    meta: dict[str, Any] = {
        "task": TASK,
        "seen_classes": list(seen_classes),
        "unseen_classes": list(unseen_classes),
        "logit_scale": float(head.scale.item()),
        "residual_weight": float(head.residual_weight.item()),
        "caption_residual": bool(head.caption_residual),
        "templates": list(templates),
        "classes": [s.to_dict() for s in specs],
        "image_encoder_name": image_encoder,
        "text_encoder_name": text_encoder,
        "image_encoder_id": image_encoder_id,
        "text_encoder_id": text_encoder_id,
        **(extra or {}),
    }
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


def is_zeroshot_bundle(model_dir: str | Path) -> bool:
    """True when `model_dir` holds a bundle written by `save_zeroshot_model` (cheap: JSON only)."""
    from skyfuse.training.bundle import read_manifest

    try:
        return (read_manifest(Path(model_dir)).get("extra") or {}).get("task") == TASK
    except CheckpointError:
        return False


class ZeroShotModel:
    """A trained semantic head with its encoders: scores images against any class names.

    Encoders are built lazily from the names in the bundle, or passed in (tests, servers).
    """

    def __init__(
        self,
        head: SemanticHead,
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
        """Whether predictions read a caption (text-reading fusion or the caption residual)."""
        return bool(self.head.fusion.uses_text or self.head.caption_residual)

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
        """(B, C) cosine logits (temperature included) of each image against `class_names`."""
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
    from skyfuse.training.bundle import load_bundle

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
