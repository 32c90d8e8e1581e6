"""A stub OpenAI-compatible VLM server with injectable faults, for tests, benchmarks and dry runs.

Why a raw asyncio server and not FastAPI: faults such as a dropped connection or a body cut in half
need control of the socket. It answers ``POST /v1/chat/completions`` with a deterministic caption
("stub caption <first 12 hex digits of the image's sha256>") after a fixed latency, and
``GET /v1/models``. Run it alone with ``python -m skyfuse.captioning.stub --latency 0.2``.

Fault kinds: ``ok``, ``500``, ``429`` (with Retry-After), ``malformed`` (invalid JSON body),
``drop`` (connection closed without an answer), ``hang`` (never answers: client timeout),
``400``, ``401``, ``404``, ``413``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import threading
from collections import Counter
from collections.abc import Callable, Sequence

FaultPlan = Callable[[str, int], str]

FAULT_KINDS = ("ok", "500", "429", "malformed", "drop", "hang", "400", "401", "404", "413")


def first_attempt_faults(kinds: Sequence[str]) -> FaultPlan:
    """The first request for the i-th distinct image gets ``kinds[i % len(kinds)]``; retries succeed."""
    order: dict[str, int] = {}

    def plan(image_key: str, attempt: int) -> str:
        if image_key not in order:
            order[image_key] = len(order)
        return kinds[order[image_key] % len(kinds)] if attempt == 0 else "ok"

    return plan


def always(kind: str) -> FaultPlan:
    return lambda image_key, attempt: kind


def _reason(code: int) -> str:
    return {
        200: "OK",
        400: "Bad Request",
        401: "Unauthorized",
        404: "Not Found",
        413: "Payload Too Large",
        429: "Too Many Requests",
        500: "Internal Server Error",
    }.get(code, "Error")


class StubVLMServer:
    """Runs in a background thread; use as a context manager. `url` ends in ``/v1``."""

    def __init__(
        self,
        *,
        latency: float = 0.0,
        faults: FaultPlan | None = None,
        retry_after: float = 0.05,
        hang_s: float = 30.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.latency = latency
        self.faults = faults or always("ok")
        self.retry_after = retry_after
        self.hang_s = hang_s
        self.host = host
        self.port = port
        self.counts: Counter[str] = Counter()
        self.attempts: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.last_headers: dict[str, str] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> StubVLMServer:
        ready = threading.Event()
        failed: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._handle, self.host, self.port, backlog=1024)
                )
            except OSError as exc:
                failed.append(exc)
                loop.close()
                ready.set()
                return
            self._loop = loop
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            self._server.close()
            loop.run_until_complete(self._server.wait_closed())
            loop.close()

        self._thread = threading.Thread(target=run, name="stub-vlm", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failed:
            raise OSError(f"stub server cannot listen on {self.host}:{self.port}: {failed[0]}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            loop = self._loop

            def shutdown() -> None:
                for task in asyncio.all_tasks(loop):
                    task.cancel()
                loop.stop()

            loop.call_soon_threadsafe(shutdown)
            self._thread.join(10)
            self._loop = None

    def __enter__(self) -> StubVLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ HTTP
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = [*lines[0].split(" "), "", ""][:3]
                headers = {}
                for ln in lines[1:]:
                    if ":" in ln:
                        k, v = ln.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                n = int(headers.get("content-length", "0") or 0)
                body = await reader.readexactly(n) if n else b""
                self.last_headers = headers
                keep = await self._respond(method, path, body, writer)
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:
            writer.transport.abort()
            raise
        finally:
            if not writer.transport.is_closing():
                writer.close()

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        code: int,
        body: bytes,
        extra: dict[str, str] | None = None,
    ) -> None:
        head = [
            f"HTTP/1.1 {code} {_reason(code)}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            "Connection: keep-alive",
        ]
        head += [f"{k}: {v}" for k, v in (extra or {}).items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()

    async def _respond(
        self, method: str, path: str, body: bytes, writer: asyncio.StreamWriter
    ) -> bool:
        if method == "GET" and path.rstrip("/").endswith("/models"):
            await self._send(writer, 200, json.dumps({"data": [{"id": "stub"}]}).encode())
            return True
        if method != "POST" or not path.rstrip("/").endswith("/chat/completions"):
            await self._send(writer, 404, b'{"error": {"message": "no such route"}}')
            return True
        try:
            req = json.loads(body)
            url = next(
                p["image_url"]["url"]
                for p in req["messages"][0]["content"]
                if p.get("type") == "image_url"
            )
            image = base64.b64decode(url.split(",", 1)[1])
            sha = hashlib.sha256(image).hexdigest()
        except (ValueError, KeyError, IndexError, StopIteration, TypeError):
            await self._send(writer, 400, b'{"error": {"message": "bad request body"}}')
            return True
        with self._lock:
            attempt = self.attempts[sha]
            self.attempts[sha] += 1
            kind = self.faults(sha, attempt)
            self.counts[kind] += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            if kind == "ok":
                out = {
                    "id": "stub",
                    "object": "chat.completion",
                    "model": req.get("model"),
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": f"stub caption {sha[:12]}"},
                        }
                    ],
                }
                await self._send(writer, 200, json.dumps(out).encode())
            elif kind == "malformed":
                await self._send(writer, 200, b'{"choices": [{"message": ')
            elif kind == "drop":
                writer.transport.abort()
                return False
            elif kind == "hang":
                await asyncio.sleep(self.hang_s)
                return False
            elif kind == "429":
                await self._send(
                    writer,
                    429,
                    b'{"error": {"message": "rate limited"}}',
                    {"Retry-After": f"{self.retry_after:g}"},
                )
            elif kind == "404":
                msg = f"The model `{req.get('model')}` does not exist."
                await self._send(writer, 404, json.dumps({"error": {"message": msg}}).encode())
            elif kind == "413":
                await self._send(writer, 413, b'{"error": {"message": "image too large"}}')
            elif kind in ("400", "401", "500"):
                messages = {
                    "400": "invalid request",
                    "401": "invalid api key",
                    "500": "server exploded",
                }
                await self._send(
                    writer, int(kind), json.dumps({"error": {"message": messages[kind]}}).encode()
                )
            else:
                raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
            return True
        finally:
            with self._lock:
                self.in_flight -= 1


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--latency", type=float, default=0.2, help="seconds per request")
    args = ap.parse_args(argv)
    server = StubVLMServer(latency=args.latency, host=args.host, port=args.port).start()
    print(f"stub VLM server on {server.url} (latency {args.latency}s); Ctrl-C stops it", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
