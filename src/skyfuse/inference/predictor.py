"""Predictor: a trained bundle plus its encoders, ready to classify PIL images.

Why one object: prediction, the CLI, the HTTP service and `explain` must run the very same code path
(paper bug 5: the published code rebuilt its model differently for export), so every consumer goes
through `Predictor.predict`, which encodes pixels and captions with the encoders named in the bundle.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from skyfuse.captioning.provenance import CaptionSource
from skyfuse.devices import check_device
from skyfuse.errors import BadInputError, ConfigError, SkyfuseError
from skyfuse.inference.captions import (
    GIVEN,
    NONE,
    CaptionError,
    CaptionPolicy,
    CaptionRefused,
    make_caption_fn,
    resolve_caption_policy,
)


@dataclass(frozen=True)
class LabelProb:
    """One entry of a top-k list."""

    label: str
    prob: float

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "prob": round(float(self.prob), 6)}


@dataclass
class Explanation:
    """Attention of one sample, averaged over heads, with what is needed to draw it.

    maps: name -> 2-D array (queries, keys) as returned by the model (e.g. ``t2i`` = words over
    regions, ``i2t`` = regions over words); image_tokens / text_tokens: how many real tokens;
    words: the caption's tokens as strings (len == text_tokens).
    """

    maps: dict[str, np.ndarray]
    image_tokens: int
    text_tokens: int
    words: list[str]


@dataclass
class Prediction:
    """Top-k labels for one image, the caption that was used and where it came from.

    caption_source: ``"given"`` (the caller's), the captioner's id (e.g. ``attributes:attributes-v1``)
    or ``"none"`` (image-only: caption is None); caption_mismatch: the caption is of another kind
    than the model's training captions. A record whose caption could not be made has empty `top_k`
    and `error` (with the HTTP status a server answers in `error_status`).
    """

    top_k: list[LabelProb]
    caption: str | None
    explanation: Explanation | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    caption_source: str = "given"
    caption_mismatch: bool = False
    error: str | None = None
    error_status: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "top_k": [t.to_dict() for t in self.top_k],
            "caption": self.caption,
            "caption_source": self.caption_source,
            "caption_mismatch": self.caption_mismatch,
        }
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass(frozen=True)
class CaptionSlot:
    """The caption of one image: text (None: image-only or failed), its source and mismatch flag."""

    text: str | None
    source: str
    mismatch: bool = False
    error: CaptionError | None = None


class CaptionProvider:
    """Captions for a predictor under its `CaptionPolicy`; the captioner is built on first use, once.

    Why lazy: building a captioner can load a VLM, which prediction with given captions never needs;
    a server's concurrent first requests must share one build (the lock). `Predictor` and the
    zero-shot predictor both caption through this.
    """

    def __init__(self, policy: CaptionPolicy) -> None:
        self.policy = policy
        self._fn: Any = None
        self._lock = threading.Lock()

    def generate(self, images: Sequence[Image.Image]) -> list[str | CaptionError]:
        """Captions (or per-image errors) from the policy's captioner; CaptionRefused when the
        policy has none."""
        if self.policy.mode != "captioner":
            raise CaptionRefused(
                self.policy.refusal or "this model needs a caption for every image"
            )
        got: list[str | CaptionError] = self.build()(images)
        if len(got) != len(images):
            raise CaptionError(
                f"the captioner returned {len(got)} captions for {len(images)} images"
            )
        return got

    def build(self) -> Any:
        """The captioner as a function (built once; a local VLM loads its weights here)."""
        if self._fn is None:
            with self._lock:
                if self._fn is None:
                    self._fn = make_caption_fn(self.policy)
        return self._fn

    def warm_up(self) -> None:
        """Build the policy's captioner now (servers do this before they report ready)."""
        if self.policy.mode == "captioner":
            self.build()

    def slots(
        self, images: Sequence[Image.Image], captions: Sequence[str | None]
    ) -> list[CaptionSlot]:
        """One slot per image: a given caption as is; a missing (None or blank) one made under the
        policy (image-only when it says so; a failure becomes the slot's error)."""
        out: list[CaptionSlot | None] = [
            CaptionSlot(c.strip(), GIVEN) if isinstance(c, str) and c.strip() else None
            for c in captions
        ]
        missing = [i for i, c in enumerate(out) if c is None]
        if missing and self.policy.mode == "image-only":
            for i in missing:
                out[i] = CaptionSlot(None, NONE)
        elif missing:
            made = self.generate([images[i] for i in missing])
            sid, mism = self.policy.source_id, self.policy.mismatch
            for i, c in zip(missing, made, strict=True):
                out[i] = (
                    CaptionSlot(None, sid, mism, c)
                    if isinstance(c, CaptionError)
                    else CaptionSlot(c, sid, mism)
                )
        return [c for c in out if c is not None]


def caption_chunks(
    images: Sequence[Image.Image],
    captions: Sequence[str | None] | None,
    batch_size: int,
) -> Iterator[tuple[list[Image.Image], list[str | None]]]:
    """(images, captions) batches of at most `batch_size`, None for a caption not given.

    Why one place: every predictor must pair images and captions the same way (one per image).
    """
    images = list(images)
    if captions is not None and len(captions) != len(images):
        raise BadInputError(
            f"{len(captions)} captions for {len(images)} images; give one caption per image"
        )
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        if captions is None:
            caps: list[str | None] = [None] * len(chunk)
        else:
            caps = [None if c is None else str(c) for c in captions[start : start + batch_size]]
        yield chunk, caps


def failed_prediction(slot: CaptionSlot) -> Prediction:
    """The record of an image whose caption could not be made."""
    err = slot.error
    return Prediction(
        [],
        None,
        caption_source=slot.source,
        caption_mismatch=slot.mismatch,
        error=str(err) if err is not None else "no caption",
        error_status=getattr(err, "status", 502),
    )


def supports_image_only(model: Any, config: Any) -> bool:
    """Whether a bundle predicts without a caption: trained with caption dropout, and its forward
    takes an empty text mask (checked with one tiny forward pass; finite logits)."""
    if not float(getattr(config, "caption_dropout", 0.0) or 0.0) > 0:
        return False
    try:
        param = next(model.parameters())
        img = torch.zeros(1, 2, int(config.image_dim), dtype=param.dtype, device=param.device)
        txt = torch.zeros(1, 1, int(config.text_dim), dtype=param.dtype, device=param.device)
        img_mask = torch.ones(1, 2, dtype=torch.bool, device=param.device)
        txt_mask = torch.zeros(1, 1, dtype=torch.bool, device=param.device)
        with torch.inference_mode():
            logits = model(img, img_mask, txt, txt_mask).logits
        return bool(torch.isfinite(logits).all())
    except Exception:
        return False


def caption_policy_for(
    bundle_source: Any,
    model: Any,
    config: Any,
    model_dir: Path,
    *,
    captioner: Any | None,
    captioner_options: dict[str, Any] | None,
    prompt: Any | None,
    allow_caption_mismatch: bool,
) -> CaptionPolicy:
    """The caption policy of a loaded bundle (shared by `Predictor` and the zero-shot predictor);
    an old bundle without a recorded source is logged as such."""
    trained = CaptionSource.from_dict(bundle_source)
    if trained.kind == "unknown":
        logging.getLogger(__name__).warning(
            "%s records no caption source (written before skyfuse recorded one); captions of"
            " unknown kind: give captions or force a captioner with --allow-caption-mismatch",
            model_dir,
        )
    return resolve_caption_policy(
        trained,
        captioner=captioner,
        options=captioner_options,
        prompt=prompt,
        allow_mismatch=allow_caption_mismatch,
        image_only=supports_image_only(model, config),
        where=str(model_dir),
    )


def softmax_top_k(logits: torch.Tensor, labels: Sequence[str], k: int) -> list[list[LabelProb]]:
    """Softmax over classes, then the k best (label, prob) pairs per row, best first."""
    probs = torch.softmax(logits.float(), dim=-1)
    k = max(1, min(int(k), probs.shape[-1]))
    values, indices = probs.topk(k, dim=-1)
    return [
        [LabelProb(labels[int(i)], float(v)) for v, i in zip(vals, idxs, strict=True)]
        for vals, idxs in zip(values.tolist(), indices.tolist(), strict=True)
    ]


def _head_mean(att: torch.Tensor) -> torch.Tensor:
    """(B, H, Q, K) or (B, Q, K) -> (B, Q, K)."""
    return att.float().mean(dim=1) if att.ndim == 4 else att.float()


class Predictor:
    """Load a model bundle and classify images (with given or generated captions).

    Args:
        model_dir: a bundle written by `skyfuse.training.bundle.save_bundle`.
        image_encoder / text_encoder: already-built encoders to use instead of the ids in the bundle
            (tests and servers that share encoders); their ids must match the bundle's.
        captioner: force a captioner for images without a caption (a `skyfuse.captioning`
            captioner, a registry name, or a function images -> captions, whose kind is unknown).
            By default the source the bundle's training captions came from is used (see
            `skyfuse.inference.captions`); one of another kind is refused unless
            `allow_caption_mismatch`.
        captioner_options: the backend's options: ``base_url`` (openai), ``model`` (transformers:
            the VLM's folder), and the like.
        prompt: prompt id or file for a VLM source whose prompt text the bundle lacks.
        allow_caption_mismatch: accept a forced captioner of another kind (records say so).
        device: torch device for the fusion model and the encoders.
        batch_size: images per forward pass inside `predict`.
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        image_encoder: Any | None = None,
        text_encoder: Any | None = None,
        captioner: Any | None = None,
        captioner_options: dict[str, Any] | None = None,
        prompt: Any | None = None,
        allow_caption_mismatch: bool = False,
        device: str = "cpu",
        batch_size: int = 16,
        views: int | None = None,
    ) -> None:
        from skyfuse.encoders.views import parse_views
        from skyfuse.training.bundle import load_bundle

        self.model_dir = Path(model_dir)
        self.bundle = load_bundle(self.model_dir)
        if self.bundle.extra.get("task") == "zeroshot":
            raise ConfigError(
                f"{self.model_dir}: a zero-shot bundle; predict with `skyfuse predict --classes`"
                " (Python: skyfuse.inference.load_predictor); explain needs a classification bundle"
            )
        self.device = check_device(device)
        self.batch_size = max(1, int(batch_size))
        self.model = self.bundle.model.to(self.device).eval()
        self.class_names: list[str] = list(self.bundle.class_names)
        extra = self.bundle.extra
        self.image_encoder = image_encoder or build_encoder(
            self.bundle.image_encoder, "image", extra.get("image_encoder_name")
        )
        self.text_encoder = text_encoder or build_encoder(
            self.bundle.text_encoder, "text", extra.get("text_encoder_name")
        )
        check_encoder(self.image_encoder, self.bundle.image_encoder, "image", self.model_dir)
        check_encoder(self.text_encoder, self.bundle.text_encoder, "text", self.model_dir)
        for enc in (self.image_encoder, self.text_encoder):
            if isinstance(enc, torch.nn.Module):
                enc.to(self.device).eval()
        self.caption_policy = caption_policy_for(
            self.bundle.caption_source,
            self.model,
            self.bundle.config,
            self.model_dir,
            captioner=captioner,
            captioner_options=captioner_options,
            prompt=prompt,
            allow_caption_mismatch=allow_caption_mismatch,
        )
        self._captions = CaptionProvider(self.caption_policy)
        trained_views = (extra.get("train_config") or {}).get("views", 1)
        #: dihedral views averaged per image: the bundle's (what its test accuracy was measured
        #: with) unless given; 1 is 8x cheaper for a latency-bound server
        self.views = parse_views(int(views if views is not None else trained_views or 1))

    # -- captions ----------------------------------------------------------------------------------
    @property
    def prompt_id(self) -> str | None:
        return self.bundle.prompt_id

    @property
    def training_captions(self) -> CaptionSource:
        """Where the bundle's training captions came from (kind ``unknown`` for old bundles)."""
        return self.caption_policy.trained

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        """Captions for images under the caption policy; CaptionRefused when it has no captioner,
        CaptionError when one image's caption fails."""
        out = []
        for c in self._captions.generate(images):
            if isinstance(c, CaptionError):
                raise c
            out.append(c)
        return out

    def warm_up(self) -> float:
        """Run the encoders and the model once and build the captioner; returns the seconds taken.

        Why: lazily loaded parts (tokenizer, kernels, a local VLM) made a server's first request
        take seconds; a server calls this before it reports ready."""
        t0 = time.perf_counter()
        self.forward([Image.new("RGB", (64, 64), (96, 112, 80))], ["a warm-up caption"])
        self._captions.warm_up()
        return round(time.perf_counter() - t0, 3)

    # -- prediction --------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode(self, images: Sequence[Image.Image], captions: Sequence[str]) -> tuple[Any, Any]:
        """Encoder outputs (image TokenBatch, text TokenBatch) on the predictor's device."""
        pixels = self.image_encoder.preprocess(list(images)).to(self.device)
        image = self.image_encoder.encode(pixels)
        text = self.text_encoder.encode_texts(list(captions))
        return image.to(self.device, torch.float32), text.to(self.device, torch.float32)

    @torch.inference_mode()
    def forward(
        self,
        images: Sequence[Image.Image],
        captions: Sequence[str | None],
        *,
        explain: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, list[Explanation] | None]:
        """Logits (B, C), fused features (B, F) and, on request, per-sample attention. A None caption
        is an absent one (image-only: the sample's text mask is all False, as caption dropout
        trains it)."""
        from skyfuse.encoders.views import apply_view

        absent = [c is None for c in captions]
        pixels = self.image_encoder.preprocess(list(images)).to(self.device)
        text = self.text_encoder.encode_texts([c or "" for c in captions])
        text = text.to(self.device, torch.float32)
        if any(absent):
            rows = torch.tensor(absent, device=text.mask.device)
            text.mask = text.mask & ~rows[:, None]
            text.tokens = text.tokens.masked_fill(rows[:, None, None], 0.0)
        probs: torch.Tensor | None = None
        for v in self.views:  # test-time augmentation over the dihedral views, as in evaluation
            image = self.image_encoder.encode(apply_view(pixels, v) if v else pixels)
            image = image.to(self.device, torch.float32)
            out = self.model(
                image.tokens,
                image.mask,
                text.tokens,
                text.mask,
                return_attention=explain and v == 0,
            )
            if v == 0:
                first, first_mask = out, image.mask
            p = out.logits.float().softmax(dim=-1)
            probs = p if probs is None else probs + p
        assert probs is not None
        logits = (
            first.logits.float()
            if len(self.views) == 1
            else (probs / len(self.views)).clamp_min(1e-12).log()
        )
        explanations = None
        if explain:
            explanations = self._explanations(
                first.attention or {}, first_mask, text.mask, [c or "" for c in captions]
            )
        return logits.cpu(), first.fused.float().cpu(), explanations

    def predict(
        self,
        images: Sequence[Image.Image],
        captions: Sequence[str | None] | None = None,
        top_k: int = 5,
        *,
        explain: bool = False,
    ) -> list[Prediction]:
        """Top-k labels per image. A caption that is not given (None, blank, or no `captions`) is
        made under the caption policy; an image whose caption fails gets a Prediction with `error`
        (and no labels); CaptionRefused when the policy can make none."""
        out: list[Prediction] = []
        for chunk, caps in caption_chunks(images, captions, self.batch_size):
            slots = self._captions.slots(chunk, caps)
            ok = [i for i, slot in enumerate(slots) if slot.error is None]
            done: dict[int, Prediction] = {}
            if ok:
                texts = [slots[i].text for i in ok]
                logits, _, expl = self.forward([chunk[i] for i in ok], texts, explain=explain)
                tops = softmax_top_k(logits, self.class_names, top_k)
                for j, i in enumerate(ok):
                    slot = slots[i]
                    done[i] = Prediction(
                        tops[j],
                        slot.text,
                        expl[j] if expl else None,
                        caption_source=slot.source,
                        caption_mismatch=slot.mismatch,
                    )
            out.extend(done.get(i) or failed_prediction(slot) for i, slot in enumerate(slots))
        return out

    # -- attention ---------------------------------------------------------------------------------
    def _explanations(
        self,
        attention: dict[str, torch.Tensor],
        image_mask: torch.Tensor,
        text_mask: torch.Tensor,
        captions: Sequence[str],
    ) -> list[Explanation]:
        words = token_strings(self.text_encoder, captions)
        n_img = image_mask.sum(dim=1).tolist()
        n_txt = text_mask.sum(dim=1).tolist()
        merged = {k: _head_mean(v).cpu() for k, v in attention.items() if torch.is_tensor(v)}
        result = []
        for b in range(image_mask.shape[0]):
            img_keep = image_mask[b].cpu()
            txt_keep = text_mask[b].cpu()
            maps: dict[str, np.ndarray] = {}
            for name, att in merged.items():
                rows, cols = _streams(name, att.shape[-2], att.shape[-1], img_keep, txt_keep)
                maps[name] = att[b][rows][:, cols].numpy()
            w = words[b] if b < len(words) else []
            t = int(n_txt[b])
            w = (w + [f"tok{i}" for i in range(len(w), t)])[:t]
            result.append(Explanation(maps, int(n_img[b]), t, w))
        return result


_STREAMS = {"t2i": ("text", "image"), "i2t": ("image", "text"), "text_self": ("text", "text")}


def _streams(
    name: str, q: int, k: int, img_keep: torch.Tensor, txt_keep: torch.Tensor
) -> tuple[torch.Tensor | slice, torch.Tensor | slice]:
    """Masks selecting the real query rows and key columns of an attention map named ``levelN.kind``."""
    keep = {"image": img_keep, "text": txt_keep}
    kind = name.rsplit(".", 1)[-1]
    if kind in _STREAMS:
        r, c = _STREAMS[kind]
        if keep[r].shape[0] == q and keep[c].shape[0] == k:
            return keep[r], keep[c]

    def by_size(n: int) -> torch.Tensor | slice:
        matches = [m for m in (img_keep, txt_keep) if m.shape[0] == n]
        return matches[0] if len(matches) == 1 else slice(None)

    return by_size(q), by_size(k)


def token_strings(text_encoder: Any, captions: Sequence[str]) -> list[list[str]]:
    """The caption tokens as strings (word pieces), aligned with the text encoder's token sequence."""
    tokenizer = getattr(text_encoder, "tokenizer", None)
    if tokenizer is None:
        return [[] for _ in captions]
    try:
        batch = text_encoder.tokenize(list(captions))
        ids = batch["input_ids"]
        mask = batch.get("attention_mask")
    except Exception:
        return [[] for _ in captions]
    out = []
    for i in range(ids.shape[0]):
        row = ids[i] if mask is None else ids[i][mask[i].bool()]
        out.append([str(t) for t in tokenizer.convert_ids_to_tokens(row.tolist())])
    return out


def _encoder_names(encoder_id: str, name: str | None = None) -> list[str]:
    """Registry names to try: the name the user trained with (bundles keep it in ``extra``), then the
    id's prefix (ids look like ``<name>@<fingerprint>:<options>``), then the id itself."""
    names = [name] if name else []
    if "@" in encoder_id:
        names.append(encoder_id.rsplit("@", 1)[0])
    names.append(encoder_id)
    return list(dict.fromkeys(names))


def build_encoder(encoder_id: str, kind: str, name: str | None = None) -> Any:
    """Build the ``kind`` ("image" or "text") encoder a bundle names (registry name or full id)."""
    from skyfuse.encoders import create_image_encoder, create_text_encoder

    factory = create_image_encoder if kind == "image" else create_text_encoder
    last: Exception | None = None
    for candidate in _encoder_names(encoder_id, name):
        try:
            return factory(candidate)
        except (SkyfuseError, OSError) as exc:
            last = exc
    raise ConfigError(
        f"cannot build the bundle's {kind} encoder {encoder_id!r} ({last}); pass"
        f" --{kind}-encoder with the registry name or folder it was trained with"
    )


def check_encoder(encoder: Any, expected: str, kind: str, model_dir: Path) -> None:
    """Refuse an encoder of the bundle's family with another id (other weights or preprocessing would
    feed the fusion model features it never saw). A stored registry name (no ``@``) cannot be
    compared and passes; an encoder of another family fails later on the token width."""
    got = getattr(encoder, "encoder_id", None)
    if got is None or not expected or got == expected or "@" not in expected:
        return
    if "@" in got and got.rsplit("@", 1)[0] == expected.rsplit("@", 1)[0]:
        raise ConfigError(
            f"{model_dir}: the bundle was trained with {kind} encoder {expected!r}, but {got!r} was"
            f" loaded; use the same encoder weights and options"
        )
