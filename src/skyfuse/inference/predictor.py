"""Predictor: a trained bundle plus its encoders, ready to classify PIL images.

Why one object: prediction, the CLI, the HTTP service and `explain` must run the very same code path
(paper bug 5: the published code rebuilt its model differently for export), so every consumer goes
through `Predictor.predict`, which encodes pixels and captions with the encoders named in the bundle.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from skyfuse.devices import check_device
from skyfuse.errors import BadInputError, ConfigError, SkyfuseError


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
    """Top-k labels for one image and the caption that was used."""

    top_k: list[LabelProb]
    caption: str
    explanation: Explanation | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"top_k": [t.to_dict() for t in self.top_k], "caption": self.caption}


CaptionFn = Callable[[Sequence[Image.Image]], list[str]]


class LazyCaptionFn:
    """The caption function of a predictor, built on first use and only once.

    Why: building a captioner can load a VLM, which prediction with given captions never needs; a
    server's concurrent first requests must share one build (the lock). `Predictor` and the
    zero-shot predictor both caption through this.
    """

    def __init__(self, spec: Any | None, options: dict[str, Any] | None = None) -> None:
        self._spec = spec
        self._options = dict(options or {})
        self._fn: CaptionFn | None = None
        self._lock = threading.Lock()

    def __call__(self, images: Sequence[Image.Image], *, prompt: str | None) -> list[str]:
        """Captions for images; `prompt` (a prompt id) is used when the function is first built."""
        if self._fn is None:
            with self._lock:
                if self._fn is None:
                    self._fn = make_caption_fn(
                        self._spec or "attributes", prompt=prompt, **self._options
                    )
        return self._fn(images)


def caption_chunks(
    images: Sequence[Image.Image],
    captions: Sequence[str] | None,
    batch_size: int,
    caption: CaptionFn,
) -> Iterator[tuple[list[Image.Image], list[str]]]:
    """(images, captions) batches of at most `batch_size`; captions come from `caption` when None.

    Why one place: every predictor must pair images and captions the same way (one per image,
    missing captions as empty strings) and caption lazily, batch by batch.
    """
    images = list(images)
    if captions is not None and len(captions) != len(images):
        raise BadInputError(
            f"{len(captions)} captions for {len(images)} images; give one caption per image"
        )
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        if captions is None:
            caps = caption(chunk)
        else:
            caps = [str(c or "") for c in captions[start : start + batch_size]]
        yield chunk, caps


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
        captioner: a `skyfuse.captioning` captioner, a registry name (e.g. ``"attributes"``), or a
            function images -> captions; used only when `predict` gets no captions.
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
        device: str = "cpu",
        batch_size: int = 16,
    ) -> None:
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
        self._captions = LazyCaptionFn(captioner, captioner_options)

    # -- captions ----------------------------------------------------------------------------------
    @property
    def prompt_id(self) -> str | None:
        return self.bundle.prompt_id

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        """Captions for images from the configured captioner (default: the offline attribute one)."""
        return self._captions(images, prompt=self.prompt_id)

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
        self, images: Sequence[Image.Image], captions: Sequence[str], *, explain: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, list[Explanation] | None]:
        """Logits (B, C), fused features (B, F) and, on request, per-sample attention."""
        image, text = self.encode(images, captions)
        out = self.model(image.tokens, image.mask, text.tokens, text.mask, return_attention=explain)
        explanations = None
        if explain:
            explanations = self._explanations(out.attention or {}, image.mask, text.mask, captions)
        return out.logits.float().cpu(), out.fused.float().cpu(), explanations

    def predict(
        self,
        images: Sequence[Image.Image],
        captions: Sequence[str] | None = None,
        top_k: int = 5,
        *,
        explain: bool = False,
    ) -> list[Prediction]:
        """Top-k labels per image; captions are generated when not given (one per image)."""
        out: list[Prediction] = []
        for chunk, caps in caption_chunks(images, captions, self.batch_size, self.caption):
            logits, _, expl = self.forward(chunk, caps, explain=explain)
            for i, top in enumerate(softmax_top_k(logits, self.class_names, top_k)):
                out.append(Prediction(top, caps[i], expl[i] if expl else None))
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


def make_caption_fn(spec: Any, *, prompt: str | None = None, **options: Any) -> CaptionFn:
    """Turn a captioner (object, registry name or function) into images -> captions."""
    if callable(spec) and not hasattr(spec, "caption") and not hasattr(spec, "caption_images"):
        return spec  # type: ignore[no-any-return]
    captioner = spec
    if isinstance(spec, str):
        from skyfuse.captioning import create_captioner

        captioner = create_captioner(spec, **options)
    from skyfuse.inference.captions import captions_from_captioner

    def run(images: Sequence[Image.Image]) -> list[str]:
        return captions_from_captioner(captioner, images, prompt=prompt)

    return run


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
