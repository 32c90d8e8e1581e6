"""Caption images on the fly with any `skyfuse.captioning` backend.

Why an adapter: captioners are built for the batch runner (image bytes + hash, sync or async); at
prediction time we hold decoded PIL images, so they are re-encoded losslessly and fed through the same
backend interface, sync or async, without the store.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from skyfuse.data.images import sha256_bytes
from skyfuse.errors import ConfigError

if TYPE_CHECKING:
    from skyfuse.captioning.prompts import Prompt


def _png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def captions_from_captioner(
    captioner: Any, images: Sequence[Image.Image], *, prompt: str | None = None
) -> list[str]:
    """One caption per image; an image the backend fails on gets an empty caption (image-only)."""
    from skyfuse.captioning.base import CaptionFailure, FatalCaptionError, ImageJob

    the_prompt = prompt_for(prompt)
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
            results.extend(captioner.caption_batch(jobs[start : start + step], the_prompt))
    out: list[str] = []
    for r in results:
        if isinstance(r, FatalCaptionError):
            raise ConfigError(f"captioner {getattr(captioner, 'backend', '?')}: {r}")
        if isinstance(r, str):
            out.append(r.strip())
        elif isinstance(r, CaptionFailure | Exception):
            out.append("")
        else:
            out.append(str(r))
    return out


def prompt_for(prompt_id: str | None) -> Prompt:
    """The prompt to caption with, from the id a bundle recorded.

    Why lenient: bundles trained on imported or attribute captions record ``none`` and those from a
    custom prompt file record the file's stem, which need not exist where the model is deployed; the
    model must still caption new images, so such ids fall back to the default prompt (with a warning
    for a named prompt that cannot be found).
    """
    from skyfuse.captioning.prompts import DEFAULT_PROMPT, NO_PROMPT, resolve_prompt

    if not prompt_id or prompt_id == NO_PROMPT.id:
        return resolve_prompt(DEFAULT_PROMPT)
    try:
        return resolve_prompt(prompt_id)
    except ConfigError:
        logging.getLogger(__name__).warning(
            "prompt %r of the bundle is not a built-in prompt or a file here; captioning with %r",
            prompt_id,
            DEFAULT_PROMPT,
        )
        return resolve_prompt(DEFAULT_PROMPT)


def _run_coroutine(coro: Any) -> Any:
    """asyncio.run, also from inside a running loop (a worker thread runs it then)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
