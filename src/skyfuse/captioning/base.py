"""The `Captioner` interface and its registry.

Why one small interface: the runner (`runner.caption_folder`) owns everything that must behave the
same for every backend (resume, shards, the store, progress, failure accounting); a backend only turns
images into text. Synchronous backends implement `caption_batch`; network backends implement the
async `acaption` so that the runner can keep many requests in flight.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from skyfuse.captioning.prompts import Prompt
from skyfuse.registry import Registry


@dataclass(frozen=True)
class ImageJob:
    """One image to caption: `rel` is relative to the scene-folder root, `data` the file's bytes."""

    path: Path
    rel: str
    sha256: str
    data: bytes


class CaptionFailure(Exception):
    """One image could not be captioned; recorded in the store and retried on the next run."""


class FatalCaptionError(Exception):
    """The whole run cannot go on (bad key, unknown model, missing weights): stop instead of failing
    every image the same way."""


class Captioner:
    """Turns images into captions. Subclasses set `backend` and `model` and implement
    `caption_batch` (synchronous) or `acaption` (asynchronous, one image)."""

    backend: ClassVar[str] = ""
    #: False for captions not written by a vision-language model (provenance in every record).
    is_vlm: bool = True
    #: False when the prompt does not influence the caption (files, attributes).
    uses_prompt: ClassVar[bool] = True
    #: Images per `caption_batch` call.
    batch_size: int = 1
    #: Whether several `caption_batch` calls may run at once in threads.
    thread_safe: ClassVar[bool] = False
    model: str = ""

    @property
    def is_async(self) -> bool:
        return type(self).acaption is not Captioner.acaption

    def params(self) -> dict[str, Any]:
        """Generation parameters recorded with every caption (never secrets)."""
        return {}

    def caption_batch(self, jobs: list[ImageJob], prompt: Prompt) -> list[str | CaptionFailure]:
        """Caption a batch; a per-image problem is returned as a `CaptionFailure` in its slot."""
        raise NotImplementedError(f"{type(self).__name__} has no synchronous caption_batch")

    async def acaption(self, job: ImageJob, prompt: Prompt) -> str:
        """Caption one image asynchronously; raise `CaptionFailure` or `FatalCaptionError`."""
        raise NotImplementedError(f"{type(self).__name__} has no asynchronous acaption")

    async def aclose(self) -> None:
        """Release network resources (async backends)."""

    def close(self) -> None:
        """Release resources (models, files)."""


CAPTIONERS: Registry[Callable[..., Captioner]] = Registry("captioner")


def create_captioner(name: str, **options: Any) -> Captioner:
    """Build a captioner by registry name ("attributes", "openai", "transformers", "files")."""
    _load_builtin_backends()
    return CAPTIONERS.get(name)(**options)


def list_captioners() -> list[str]:
    _load_builtin_backends()
    return CAPTIONERS.names()


def _load_builtin_backends() -> None:
    # Backends register themselves on import; heavy libraries are imported inside them lazily.
    from skyfuse.captioning import attributes, files, hf_backend, openai_backend  # noqa: F401
