"""Server limits and the guards that enforce them.

Why here and not in the routes: a service that accepts uploads from a network must refuse oversize
bodies before reading them, refuse decompression bombs before decoding them, and keep the model from
being swamped; these guards are small, testable pieces the app composes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
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
    max_queue: requests allowed to wait for the model; beyond it new ones get 503 at once.
    max_caption_chars: longer given captions get 422.
    max_top_k: upper bound of the `top_k` form field.
    """

    max_upload_bytes: int = 16 * 1024 * 1024
    max_pixels: int = 40_000_000
    timeout_s: float = 30.0
    max_concurrency: int = 1
    max_queue: int = 64
    max_caption_chars: int = 4000
    max_top_k: int = 100


class GateError(Exception):
    """The model gate refused or gave up on a request; `status` is the HTTP status to send."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ModelGate:
    """Bounded concurrency and a deadline around blocking model calls.

    A call waits for one of `max_concurrency` slots (at most `max_queue` callers wait; more get 503),
    then runs in a worker thread. If the deadline passes the caller gets 504, but the slot is released
    only when the thread really finishes, so the bound on concurrent model work always holds.
    """

    def __init__(self, max_concurrency: int, max_queue: int) -> None:
        self.max_concurrency = max(1, int(max_concurrency))
        self.max_queue = max(0, int(max_queue))
        self._sem = asyncio.Semaphore(self.max_concurrency)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            self.max_concurrency, thread_name_prefix="skyfuse-model"
        )
        self.waiting = 0
        self.running = 0

    async def run(self, fn: Callable[[], T], timeout_s: float) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        if self.waiting >= self.max_queue and self._sem.locked():
            raise GateError(503, f"server busy ({self.waiting} requests waiting); retry later")
        self.waiting += 1
        try:
            await asyncio.wait_for(self._sem.acquire(), timeout=max(0.0, deadline - loop.time()))
        except TimeoutError:
            raise GateError(
                504, f"timed out after {timeout_s:g} s waiting for the model; retry later"
            ) from None
        finally:
            self.waiting -= 1
        self.running += 1

        def done(_: object) -> None:
            self.running -= 1
            self._sem.release()

        fut = loop.run_in_executor(self._pool, fn)
        fut.add_done_callback(done)
        try:
            return await asyncio.wait_for(
                asyncio.shield(fut), timeout=max(0.0, deadline - loop.time())
            )
        except TimeoutError:
            raise GateError(
                504, f"the model did not answer within {timeout_s:g} s; try a smaller image"
            ) from None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


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


#: Leading bytes of the formats the server accepts (the decoder checks the rest).
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),
    (b"MM\x00+", "tiff"),
    (b"BM", "bmp"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
)


def sniff_image_type(data: bytes) -> str | None:
    """The image format from the first bytes, or None when the data is not an image we accept."""
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    return None
