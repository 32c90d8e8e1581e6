"""The `openai` backend: any OpenAI-compatible chat-completions server (vLLM, Ollama, LM Studio,
llama.cpp server, OpenAI).

Why async httpx: captioning a dataset is thousands of slow requests; throughput comes from keeping
`concurrency` requests in flight, not from threads. Transient trouble (connection errors, timeouts,
dropped connections, 5xx, 429, malformed bodies) is retried with exponential backoff and jitter,
honouring ``Retry-After``; other 4xx answers are not retried and the message says why. A bad key or
an unknown model stops the run (`FatalCaptionError`) instead of failing every image the same way.
The API key is read from an environment variable and never printed, recorded or put in a message.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import importlib.util
import io
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from skyfuse.captioning.base import (
    CAPTIONERS,
    Captioner,
    CaptionFailure,
    FatalCaptionError,
    ImageJob,
)
from skyfuse.captioning.prompts import Prompt
from skyfuse.errors import ConfigError, ImageDecodeError

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
PASS_THROUGH = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
}
_IMAGE_SLOT = "@@skyfuse-image@@"
_JSON = {"Content-Type": "application/json"}
#: Connection pools per captioner (see `OpenAICaptioner._get_client`).
CLIENT_SHARDS = 8
#: Upper bound on a server-requested wait, so a wrong header cannot stall a run for hours.
MAX_RETRY_AFTER_S = 300.0


def _cache_missing_sniffio() -> None:
    """httpcore runs ``import sniffio`` on every request; when sniffio is not installed each failed
    import searches sys.path again (~0.7 ms, the largest client CPU cost per request). Recording the
    absence once makes that import fail instantly, with the same outcome (asyncio)."""
    if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
        sys.modules["sniffio"] = None  # type: ignore[assignment]


def _safe_url(url: str) -> str:
    """Drop any user:password part so that URLs can be printed and recorded."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with 'equal jitter': half fixed, half random, capped."""
    d = min(cap, base * (2**attempt))
    return d / 2 + rng.uniform(0, d / 2)


def encode_image(job: ImageJob, max_side: int | None) -> str:
    """A data URL: JPEG/PNG/WebP bytes as they are; anything else (TIFF, 16-bit, multiband) or an
    image over `max_side` is decoded by skyfuse's rules and re-encoded as JPEG."""
    suffix = Path(job.rel).suffix.lower()
    if max_side is None and suffix in PASS_THROUGH:
        return f"data:{PASS_THROUGH[suffix]};base64," + base64.b64encode(job.data).decode("ascii")
    from skyfuse.data.images import decode_image

    try:
        img = decode_image(job.data, job.path)
    except ImageDecodeError as exc:
        raise CaptionFailure(exc.reason) from None
    if max_side is not None and max(img.size) > max_side:
        img.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=92)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _error_message(resp: Any) -> str:
    try:
        data = resp.json()
    except ValueError:
        return " ".join(resp.text.split())[:200]
    if isinstance(data, dict):
        err = data.get("error", data.get("detail", data))
        if isinstance(err, dict):
            err = err.get("message", err)
        return " ".join(str(err).split())[:300]
    return str(data)[:200]


def parse_content(data: Any) -> str:
    """The caption text of a chat-completions response (string or list-of-parts content)."""
    content = data["choices"][0]["message"]["content"]
    if isinstance(content, list):
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        raise TypeError("content is not text")
    return content.strip()


@CAPTIONERS.register("openai")
class OpenAICaptioner(Captioner):
    """Captions through ``POST {base_url}/chat/completions`` with the image as a base64 data URL."""

    backend: ClassVar[str] = "openai"

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 120.0,
        max_retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        max_side: int | None = None,
        pool_size: int = 256,
    ) -> None:
        if not model:
            raise ConfigError("the openai backend needs --model NAME (as the server knows it)")
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip(
            "/"
        )
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"--base-url {_safe_url(self.base_url)!r}: must start with http:// or https://"
            )
        self.api_key_env = api_key_env
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.seed = seed
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_side = max_side
        self.pool_size = pool_size
        self._clients: list[Any] | None = None
        self._next = 0
        self._rng = random.Random()
        self.retries = 0  # total retried attempts, for reporting

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAICaptioner(model={self.model!r}, base_url={_safe_url(self.base_url)!r})"

    def params(self) -> dict[str, Any]:
        return {
            "base_url": _safe_url(self.base_url),
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "seed": self.seed,
            "max_side": self.max_side,
        }

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _get_client(self) -> Any:
        """Round-robin over a few small pools: httpcore's pool bookkeeping grows with the square of
        the connections it holds, so 64 requests in flight through one pool cost more CPU than
        the requests themselves."""
        if self._clients is None:
            import httpx

            _cache_missing_sniffio()

            per = max(8, -(-self.pool_size // CLIENT_SHARDS))
            # one shared TLS context: loading CA certificates costs ~0.1 s per client; plain http
            # (a local vLLM/Ollama) never uses TLS, so it does not load them at all
            https = self.base_url.startswith("https://")
            ssl_context = httpx.create_ssl_context() if https else False
            self._clients = [
                httpx.AsyncClient(
                    timeout=httpx.Timeout(self.read_timeout, connect=self.connect_timeout),
                    limits=httpx.Limits(max_connections=per, max_keepalive_connections=per),
                    headers=self._headers(),
                    verify=ssl_context,
                )
                for _ in range(CLIENT_SHARDS)
            ]
        self._next = (self._next + 1) % CLIENT_SHARDS
        return self._clients[self._next]

    def request_body(self, job: ImageJob, prompt: Prompt) -> bytes:
        """The JSON request. The base64 image is spliced in after encoding the rest: it needs no
        escaping, and running a 100 kB string through the JSON encoder costs more than the request."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": prompt.text},
                        {
                            "type": "image_url",
                            "image_url": {"url": _IMAGE_SLOT},
                        },
                    ],
                }
            ],
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }
        if self.seed is not None:
            body["seed"] = self.seed
        head, tail = json.dumps(body).encode("utf-8").split(_IMAGE_SLOT.encode("ascii"), 1)
        return head + encode_image(job, self.max_side).encode("ascii") + tail

    def _client_error(self, status: int, message: str) -> Exception:
        key = os.environ.get(self.api_key_env)
        if key:
            message = message.replace(key, "***")
        url = _safe_url(self.base_url)
        low = message.lower()
        if status in (401, 403):
            hint = (
                f"set {self.api_key_env} to a valid key"
                if key
                else f"{self.api_key_env} is not set; export it with the server's key"
            )
            return FatalCaptionError(
                f"{url}: HTTP {status}, the API key was rejected ({message}); {hint}"
            )
        model_missing = "model" in low and any(
            w in low for w in ("not found", "does not exist", "unknown", "not available")
        )
        if status == 404 or model_missing:
            return FatalCaptionError(
                f"{url}: HTTP {status}, model {self.model!r} or the endpoint was not found ({message});"
                " check --model against the server's model list and that --base-url ends in /v1"
            )
        if status == 413 or (
            "image" in low and any(w in low for w in ("large", "size", "pixel", "dimension"))
        ):
            return CaptionFailure(
                f"HTTP {status}: image too large for the server ({message}); pass --max-side 1024"
            )
        return CaptionFailure(f"HTTP {status}, not retried: {message}")

    async def acaption(self, job: ImageJob, prompt: Prompt) -> str:
        import httpx

        client = self._get_client()
        body = self.request_body(job, prompt)
        url = self.base_url + "/chat/completions"
        reason = ""
        unreachable = False
        for attempt in range(self.max_retries + 1):
            wait: float | None = None
            unreachable = False
            try:
                resp = await client.post(url, content=body, headers=_JSON)
            except httpx.ConnectError as exc:
                unreachable = True
                reason = f"cannot connect ({str(exc) or type(exc).__name__})"
            except httpx.TimeoutException as exc:
                reason = f"timed out ({type(exc).__name__})"
            except httpx.TransportError as exc:
                reason = f"connection problem ({type(exc).__name__}: {str(exc) or 'dropped'})"
            else:
                status = resp.status_code
                if status == 200:
                    try:
                        return parse_content(resp.json())
                    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                        reason = "malformed response body"
                elif status == 429 or status == 408 or status >= 500:
                    reason = f"HTTP {status}: {_error_message(resp)}"
                    wait = parse_retry_after(resp.headers.get("retry-after"))
                else:
                    raise self._client_error(status, _error_message(resp))
            if attempt == self.max_retries:
                break
            self.retries += 1
            delay = backoff_delay(attempt, self.backoff, self.max_backoff, self._rng)
            if wait is not None:
                delay = min(wait, MAX_RETRY_AFTER_S) + self._rng.uniform(0, 0.1 * self.backoff)
            await asyncio.sleep(delay)
        if unreachable:  # still no server after every retry: stop instead of failing each image
            raise FatalCaptionError(
                f"{_safe_url(self.base_url)}: {reason} after {self.max_retries + 1} attempts;"
                " start the server or check --base-url"
            )
        raise CaptionFailure(f"gave up after {self.max_retries + 1} attempts; last: {reason}")

    async def aclose(self) -> None:
        if self._clients is not None:
            clients, self._clients = self._clients, None
            for client in clients:
                await client.aclose()
