"""A service as data: what `skyfuse serve` decides before uvicorn starts, testable without the CLI.

`build_service` does every check that can fail (address, bundle, captioner, caption policy) and
loads and runs the model once, so a failure is one line before the server listens.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skyfuse.inference.job import CaptionChoice

if TYPE_CHECKING:
    from skyfuse.serving.limits import ServeLimits


def check_bindable(host: str, port: int) -> None:
    """Fail in one line, before the model loads, when HOST:PORT cannot be listened on (a port in use
    used to surface as uvicorn's log lines and exit status 3 after the model had loaded)."""
    import socket

    from skyfuse.errors import ConfigError

    try:
        family, _, _, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise ConfigError(
            f"--host {host}: cannot resolve ({exc.strerror}); use an address such as 127.0.0.1"
        ) from None
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            sock.bind(addr)
        except OSError as exc:
            raise ConfigError(
                f"{host}:{port}: cannot listen ({exc.strerror}); pick another --port or stop what"
                " uses it"
            ) from None


@dataclass(frozen=True)
class ServeSettings:
    """One bundle served on HOST:PORT, with its caption source and request limits."""

    model_dir: Path
    host: str = "127.0.0.1"
    port: int = 8000
    caption: CaptionChoice = field(default_factory=CaptionChoice)
    require_caption: bool = False
    classes: str | None = None
    max_upload_mb: float = 16.0
    max_pixels: int = 40_000_000
    timeout: float = 30.0
    concurrency: int = 1
    max_batch: int = 8
    max_queue: int = 64
    device: str = "cpu"
    views: int | None = None

    @property
    def exposed(self) -> bool:
        """True when the address is reachable from other machines (the service has no auth)."""
        try:
            return not ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host != "localhost"

    def limits(self) -> ServeLimits:
        from skyfuse.serving.limits import ServeLimits

        return ServeLimits(
            max_upload_bytes=int(self.max_upload_mb * 1024 * 1024),
            max_pixels=self.max_pixels,
            timeout_s=self.timeout,
            max_concurrency=self.concurrency,
            max_batch=self.max_batch,
            max_queue=self.max_queue,
        )


@dataclass
class Service:
    """A warmed-up model inside its FastAPI app, ready to `serve_forever`."""

    settings: ServeSettings
    model_dir: Path
    predictor: Any
    app: Any

    def serve_forever(self) -> None:
        """Run uvicorn in the foreground until interrupted."""
        import uvicorn

        from skyfuse.serving.server import uvicorn_config

        s = self.settings
        uvicorn.Server(uvicorn_config(self.app, s.host, s.port, log_level="info")).run()


def run_name(model_dir: Path) -> str:
    """The name a service shows: the run folder's, for DIR/model."""
    where = Path(model_dir).resolve()
    return where.parent.name if where.name == "model" else where.name


def build_service(settings: ServeSettings, say: Callable[[str], None] | None = None) -> Service:
    """Check the address, load the model, check its caption policy and warm it up.

    `say` gets the caption-policy line and the warm-up time.
    """
    from skyfuse.inference.loading import load_predictor, parse_classes, resolve_model_dir
    from skyfuse.serving.app import check_caption_policy, create_app

    say = say or (lambda _: None)
    check_bindable(settings.host, settings.port)
    model_dir = resolve_model_dir(settings.model_dir)
    caption_kw = settings.caption.predictor_kw()  # checks a forced captioner before --classes
    predictor = load_predictor(
        model_dir,
        classes=parse_classes(settings.classes),
        **caption_kw,
        device=settings.device,
        views=settings.views,
    )
    say(check_caption_policy(predictor, require_caption=settings.require_caption))
    # load everything (encoders, a local VLM) now: a failure is one line, not a lifespan trace
    say(f"model warmed up in {predictor.warm_up():.1f} s")
    app = create_app(predictor, settings.limits(), model_name=run_name(model_dir))
    return Service(settings, model_dir, predictor, app)


__all__ = ["ServeSettings", "Service", "build_service", "check_bindable", "run_name"]
