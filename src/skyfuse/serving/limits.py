"""Server limits and the guards that enforce them.

Why here and not in the routes: a service that accepts uploads from a network must refuse oversize
bodies before reading them, refuse decompression bombs before decoding them, and keep the model from
being swamped; these guards are small, testable pieces the app composes.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.exceptions import HTTPException

T = TypeVar("T")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class ServeLimits:
    """Limits of one server. Defaults suit a CPU box serving scene tiles (a few hundred pixels).

    max_upload_bytes: request bodies above this get 413 before they are read in full.
    max_pixels: decoded width x height above this gets 413 (decompression-bomb guard).
    timeout_s: a request that has not finished (queue wait + model) by then gets 504.
    max_concurrency: model calls running at once (threads); more requests wait in a queue.
    max_batch: waiting requests merged into one model call (dynamic batching; 1 turns it off).
    max_queue: requests allowed to wait for the model; beyond it new ones get 503 at once.
    max_caption_chars: longer given captions get 422.
    max_top_k: upper bound of the `top_k` form field.
    """

    max_upload_bytes: int = 16 * 1024 * 1024
    max_pixels: int = 40_000_000
    timeout_s: float = 30.0
    max_concurrency: int = 1
    max_batch: int = 8
    max_queue: int = 64
    max_caption_chars: int = 4000
    max_top_k: int = 100


class GateError(Exception):
    """The model gate refused or gave up on a request; `status` is the HTTP status to send."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _TooLarge(HTTPException):
    """Raised from `receive`: an HTTPException so that body parsing passes it through as a 413."""


class BodySizeLimit:
    """ASGI middleware: 413 for request bodies over `max_bytes`, checked on the header and on the
    bytes actually received (chunked uploads have no Content-Length)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    await _send_json(send, 400, "invalid Content-Length header")
                    return
                if length > self.max_bytes:
                    await _send_json(send, 413, self._message())
                    return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge(413, self._message())
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _send_json(send, 413, self._message())

    def _message(self) -> str:
        mb = self.max_bytes / (1024 * 1024)
        return f"upload larger than the server's limit of {mb:g} MiB; send a smaller image"


async def _send_json(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


#: Leading bytes of the formats the server accepts, the documented ones (JPEG, PNG, TIFF, WebP,
#: BMP); anything else, GIF included, gets 415. The decoder checks the rest.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),
    (b"MM\x00+", "tiff"),
    (b"BM", "bmp"),
)


def sniff_image_type(data: bytes) -> str | None:
    """The image format from the first bytes, or None when the data is not an image we accept."""
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    return None
