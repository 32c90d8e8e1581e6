"""Captions at prediction time: of the kind the model was trained on, or refused, never guessed.

Why a policy: a model is only valid with captions from the source it was trained on (a model trained
on human RSICD captions, fed offline attribute captions, answered "Stadium" 54 % for a beach). The
bundle records that source (`skyfuse.captioning.provenance`); `resolve_caption_policy` turns it and
the user's choices into one of three modes for images that come without a caption:

- ``captioner``: caption with the training source's captioner (a VLM needs its base URL or model
  path, asked for by name), or with one the user forced (``caption_mismatch`` then says so);
- ``image-only``: the bundle was trained with caption dropout, so it predicts from the image alone
  and every such record says ``caption_source: "none"``;
- ``refuse``: nothing can make captions of the training kind (human captions, an unknown source);
  `refusal` says what to pass, and callers refuse at start-up when they will need captions.

The adapter below feeds decoded PIL images to any `skyfuse.captioning` backend (re-encoded losslessly,
sync or async) and returns a `CaptionError` for an image the backend fails on, never an empty caption.
"""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from skyfuse.captioning.provenance import CaptionSource, same_kind
from skyfuse.data.images import sha256_bytes
from skyfuse.errors import ConfigError, SkyfuseError

if TYPE_CHECKING:
    from skyfuse.captioning.prompts import Prompt

#: `caption_source` of a caption the caller gave, and of an image-only prediction.
GIVEN = "given"
NONE = "none"
MODES = ("captioner", "image-only", "refuse")


class CaptionError(SkyfuseError):
    """A caption could not be made for one image (the backend failed on it); `status` is the HTTP
    status a server answers: 502 for a failure of the captioner, 503 when it cannot be used."""

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.status = status


class CaptionRefused(ConfigError):
    """Captions are needed but no source of the training kind is available (see `refusal`)."""


@dataclass
class CaptionPolicy:
    """How a predictor gets captions it is not given (see the module docstring)."""

    trained: CaptionSource
    mode: str
    captioner: Any | None = None
    options: dict[str, Any] = field(default_factory=dict)
    prompt: Prompt | None = None
    used: CaptionSource | None = None
    mismatch: bool = False
    refusal: str | None = None

    @property
    def source_id(self) -> str:
        """What records say in `caption_source` for captions this policy makes."""
        if self.mode == "image-only":
            return NONE
        if self.used is None:
            return "unknown"
        return self.used.id if self.used.kind != "unknown" else (self.used.backend or "custom")

    def describe(self) -> str:
        """One line for a log or the CLI: what captions the model gets and how they compare."""
        trained = f"trained on {self.trained.describe()}"
        if self.mode == "image-only":
            return f"captions: {trained}; images without a caption are predicted from the image alone (caption_source none)"
        if self.mode == "refuse":
            return f"captions: {trained}; images need a given caption"
        flag = " (a different kind: caption_mismatch true)" if self.mismatch else ""
        return f"captions: {trained}; missing captions are made by {self.source_id}{flag}"


def _prompt_of(trained: CaptionSource, prompt: Any | None) -> Prompt | None:
    """The prompt the trained VLM captions were made with: recorded text, or a given prompt (id or
    file) whose hash matches; None when neither is at hand."""
    from skyfuse.captioning.prompts import Prompt, resolve_prompt

    if prompt is not None:
        p = resolve_prompt(prompt)
        return p
    if trained.prompt_text:
        return Prompt(trained.prompt_id or "recorded", trained.prompt_text)
    return None


def _named_source(name: str, options: Mapping[str, Any], prompt: Prompt | None) -> CaptionSource:
    """The source a registry captioner would be, without building it (a VLM takes long to load)."""
    from skyfuse.captioning.attributes import VERSION
    from skyfuse.captioning.provenance import GENERATING_BACKENDS

    if name == "attributes":
        return CaptionSource(
            kind="captioner", backend=name, model=VERSION, is_vlm=False, attributes_version=VERSION
        )
    if name not in GENERATING_BACKENDS:
        return CaptionSource(kind="unknown", backend=name)
    model = str(options.get("model") or "")
    if name == "transformers" and model:
        from skyfuse.captioning.hf_backend import model_id_for

        model = model_id_for(model)
    return CaptionSource(
        kind="captioner",
        backend=name,
        model=model,
        prompt_id=prompt.id if prompt else None,
        prompt_text=prompt.text if prompt else None,
        prompt_hash=prompt.hash if prompt else None,
        is_vlm=True,
    )


def _used_source(spec: Any, options: Mapping[str, Any], prompt: Prompt | None) -> CaptionSource:
    from skyfuse.captioning.provenance import source_of_captioner

    if isinstance(spec, str):
        return _named_source(spec, options, prompt)
    if hasattr(spec, "backend"):
        return source_of_captioner(spec, prompt)
    return CaptionSource(kind="unknown", backend=str(getattr(spec, "caption_source", "custom")))


def resolve_caption_policy(
    trained: CaptionSource,
    *,
    captioner: Any | None = None,
    options: Mapping[str, Any] | None = None,
    prompt: Any | None = None,
    allow_mismatch: bool = False,
    image_only: bool = False,
    where: str = "the model",
) -> CaptionPolicy:
    """The caption policy for a bundle trained on `trained` captions.

    `captioner` forces a captioner (registry name, object or function images -> captions); one of
    another kind than the training captions is refused unless `allow_mismatch`. `options` are the
    backend's keyword arguments (``model``, ``base_url``); `prompt` a prompt id or file for VLMs whose
    prompt text the bundle lacks; `image_only` whether the bundle predicts without a caption.
    Raises ConfigError for a forced captioner of the wrong kind; a source that cannot be used gives
    mode ``refuse`` (or ``image-only``) with the reason in `refusal`.
    """
    opts = dict(options or {})
    trained_text = trained.describe()
    if captioner is not None:
        the_prompt = _prompt_of(trained, prompt) if trained.backend == captioner else None
        if the_prompt is None and prompt is not None:
            from skyfuse.captioning.prompts import resolve_prompt

            the_prompt = resolve_prompt(prompt)
        if the_prompt is None and isinstance(captioner, str) and captioner != "attributes":
            from skyfuse.captioning.prompts import DEFAULT_PROMPT, resolve_prompt

            the_prompt = resolve_prompt(DEFAULT_PROMPT)
        used = _used_source(captioner, opts, the_prompt)
        mismatch = not same_kind(trained, used)
        if mismatch and not allow_mismatch:
            name = used.id if used.kind == "captioner" else used.backend or "custom"
            raise ConfigError(
                f"{where} was trained on {trained_text}, not on captions from {name}; add"
                " --allow-caption-mismatch to use it anyway (records say caption_mismatch: true),"
                " or leave the captioner out to use the training source"
            )
        return CaptionPolicy(trained, "captioner", captioner, opts, the_prompt, used, mismatch)

    def refuse(reason: str) -> CaptionPolicy:
        mode = "image-only" if image_only else "refuse"
        return CaptionPolicy(trained, mode, refusal=reason)

    if not trained.regenerable:
        return refuse(
            f"{where} was trained on {trained_text}, which no captioner can reproduce; give a"
            " caption for every image (--captions FILE, or the `caption` field), or force a"
            " captioner with --captioner NAME --allow-caption-mismatch"
        )
    backend = str(trained.backend)
    if backend == "attributes":
        used = _named_source("attributes", opts, None)
        if not same_kind(trained, used):
            return refuse(
                f"{where} was trained on attribute captions {trained.model}, this skyfuse makes"
                f" {used.model}; give captions, or add --captioner attributes"
                " --allow-caption-mismatch"
            )
        return CaptionPolicy(trained, "captioner", "attributes", opts, None, used, False)
    the_prompt = _prompt_of(trained, prompt)
    if the_prompt is None:
        return refuse(
            f"{where} was trained on captions from prompt {trained.prompt_id!r}, whose text the"
            " bundle does not hold; pass --prompt FILE (the prompt they were made with) or give"
            " captions"
        )
    if backend == "openai":
        opts.setdefault("model", trained.model)
        if not (opts.get("base_url") or os.environ.get("OPENAI_BASE_URL")):
            return refuse(
                f"{where} was trained on captions from {trained_text}; pass --base-url URL of an"
                f" OpenAI-compatible server that serves {trained.model!r} (or give captions)"
            )
    elif not opts.get("model"):
        return refuse(
            f"{where} was trained on captions from {trained_text}; pass --vlm-model with the"
            f" folder or hub id of {trained.model!r} (or give captions)"
        )
    used = _named_source(backend, opts, the_prompt)
    mismatch = not same_kind(trained, used)
    if mismatch and not allow_mismatch:
        raise ConfigError(
            f"{where} was trained on captions from {trained_text}, but {used.id} was asked for;"
            " pass the same model and prompt, or add --allow-caption-mismatch"
        )
    return CaptionPolicy(trained, "captioner", backend, opts, the_prompt, used, mismatch)


# -- running a captioner on PIL images ------------------------------------------------------------

CaptionFn = Callable[[Sequence[Image.Image]], list["str | CaptionError"]]


def _png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def captions_from_captioner(
    captioner: Any, images: Sequence[Image.Image], *, prompt: Prompt | None = None
) -> list[str | CaptionError]:
    """One caption per image; an image the backend fails on (or captions as blank) gets a
    `CaptionError` naming the reason. A captioner that cannot run at all raises CaptionError 503."""
    from skyfuse.captioning.base import CaptionFailure, FatalCaptionError, ImageJob
    from skyfuse.captioning.prompts import NO_PROMPT

    the_prompt = prompt or NO_PROMPT
    backend = getattr(captioner, "backend", "?")
    jobs = []
    for i, img in enumerate(images):
        data = _png_bytes(img)
        jobs.append(ImageJob(Path(f"upload-{i}.png"), f"upload-{i}.png", sha256_bytes(data), data))
    if captioner.is_async:

        async def run_all() -> list[str | BaseException]:
            try:
                return await asyncio.gather(
                    *(captioner.acaption(j, the_prompt) for j in jobs), return_exceptions=True
                )
            finally:
                await captioner.aclose()

        results: list[Any] = _run_coroutine(run_all())
    else:
        results = []
        step = max(1, int(getattr(captioner, "batch_size", 1) or 1))
        for start in range(0, len(jobs), step):
            try:
                results.extend(captioner.caption_batch(jobs[start : start + step], the_prompt))
            except FatalCaptionError as exc:
                raise CaptionError(f"captioner {backend} cannot run: {exc}", status=503) from None
            except Exception as exc:  # the backend broke on the batch: each image fails
                results.extend([exc] * len(jobs[start : start + step]))
    out: list[str | CaptionError] = []
    for r in results:
        if isinstance(r, FatalCaptionError):
            raise CaptionError(f"captioner {backend} cannot run: {r}", status=503)
        if isinstance(r, str) and r.strip():
            out.append(r.strip())
        elif isinstance(r, str):
            out.append(CaptionError(f"captioner {backend} returned an empty caption"))
        elif isinstance(r, CaptionFailure | Exception):
            reason = str(r) or type(r).__name__
            out.append(CaptionError(f"captioner {backend} failed: {reason}"))
        else:
            out.append(CaptionError(f"captioner {backend} returned {type(r).__name__}"))
    return out


def make_caption_fn(policy: CaptionPolicy) -> CaptionFn:
    """Build the policy's captioner (a VLM loads here) as images -> captions or errors."""
    spec = policy.captioner
    if callable(spec) and not hasattr(spec, "caption_batch") and not hasattr(spec, "acaption"):

        def call(images: Sequence[Image.Image]) -> list[str | CaptionError]:
            try:
                got = list(spec(images))
            except SkyfuseError:
                raise
            except Exception as exc:
                return [CaptionError(f"captioner failed: {exc}")] * len(images)
            return [
                c.strip()
                if isinstance(c, str) and c.strip()
                else (c if isinstance(c, CaptionError) else CaptionError("empty caption"))
                for c in got
            ]

        return call
    captioner = spec
    if isinstance(spec, str):
        from skyfuse.captioning import create_captioner

        try:
            captioner = create_captioner(spec, **policy.options)
        except (ConfigError, OSError) as exc:
            raise CaptionError(f"captioner {spec} cannot be built: {exc}", status=503) from None

    def run(images: Sequence[Image.Image]) -> list[str | CaptionError]:
        return captions_from_captioner(captioner, images, prompt=policy.prompt)

    return run


def _run_coroutine(coro: Any) -> Any:
    """asyncio.run, also from inside a running loop (a worker thread runs it then)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
