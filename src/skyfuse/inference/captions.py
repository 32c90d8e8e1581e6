"""Caption images on the fly with any `skyfuse.captioning` backend.

Why an adapter: captioners are built for the batch runner (image bytes + hash, sync or async); at
prediction time we hold decoded PIL images, so they are re-encoded losslessly and fed through the same
backend interface, sync or async, without the store.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from skyfuse.data.images import sha256_bytes
from skyfuse.errors import ConfigError


def _png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def captions_from_captioner(
    captioner: Any, images: Sequence[Image.Image], *, prompt: str | None = None
) -> list[str]:
    """One caption per image; an image the backend fails on gets an empty caption (image-only)."""
    from skyfuse.captioning.base import CaptionFailure, FatalCaptionError, ImageJob
    from skyfuse.captioning.prompts import DEFAULT_PROMPT, resolve_prompt

    the_prompt = resolve_prompt(prompt or DEFAULT_PROMPT)
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


def _run_coroutine(coro: Any) -> Any:
    """asyncio.run, also from inside a running loop (a worker thread runs it then)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
