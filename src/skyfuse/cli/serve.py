"""`skyfuse serve`: the HTTP service and web page for one model bundle."""

from __future__ import annotations

from pathlib import Path

import typer

from skyfuse.cli.common import err_console, friendly_errors
from skyfuse.cli.predict import (
    base_url_option,
    captioner_option,
    mismatch_option,
    prompt_option,
    vlm_model_option,
)


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


def register(app: typer.Typer) -> None:
    @app.command("serve")
    @friendly_errors
    def serve_cmd(
        model_dir: Path = typer.Argument(
            ...,
            help="Model bundle folder (DIR/model of a `skyfuse train` or `skyfuse zeroshot` run),"
            " or that run folder DIR.",
        ),
        host: str = typer.Option(
            "127.0.0.1", "--host", help="Address to bind; loopback unless you mean to expose it."
        ),
        port: int = typer.Option(8000, "--port", "-p", min=1, max=65535, help="TCP port."),
        backend: str | None = captioner_option(),
        vlm_model: str | None = vlm_model_option(),
        base_url: str | None = base_url_option(),
        prompt: str | None = prompt_option(),
        allow_mismatch: bool = mismatch_option(),
        require_caption: bool = typer.Option(
            False,
            "--require-caption",
            help="Serve a model whose caption source is unavailable (e.g. trained on human"
            " captions): requests without a caption get 422.",
        ),
        classes: str | None = typer.Option(
            None, "--classes", help="Zero-shot bundles: comma-separated class names to score."
        ),
        max_upload_mb: float = typer.Option(
            16.0, "--max-upload-mb", min=0.001, help="Largest request body (413 above)."
        ),
        max_pixels: int = typer.Option(
            40_000_000, "--max-pixels", min=1, help="Largest decoded width x height (413 above)."
        ),
        timeout: float = typer.Option(
            30.0,
            "--timeout",
            min=0.01,
            help="Seconds a request may take, queue included (504 after).",
        ),
        concurrency: int = typer.Option(
            1, "--concurrency", min=1, help="Model calls at once; others queue."
        ),
        max_batch: int = typer.Option(
            8, "--max-batch", min=1, help="Waiting requests merged into one model call (1 = off)."
        ),
        max_queue: int = typer.Option(
            64, "--max-queue", min=0, help="Requests allowed to wait; more get 503."
        ),
        device: str = typer.Option("cpu", "--device", help="torch device."),
        views: int | None = typer.Option(
            None,
            "--views",
            help="Dihedral views averaged per image: 1, 2, 4 or 8 (default: the bundle's, what its"
            " test accuracy was measured with; 1 is the fastest).",
        ),
    ) -> None:
        """Serve a model over HTTP: POST /predict, GET /health, GET /classes, docs at /docs, page at /.

        POST /predict takes a multipart `image` and optional `caption`, `top_k`, `explain` fields and
        returns {"top_k": [{"label", "prob"}], "caption", "caption_source", "caption_mismatch",
        "latency_ms"} (plus the attention overlay with explain=true). A request without a caption
        gets one from the model's training caption source (or an image-only answer where the model
        was trained with caption dropout). Oversize bodies and images get 413, other formats than
        JPEG/PNG/TIFF/WebP/BMP 415, corrupt images 422, a failed caption 502, a full queue or an
        unusable captioner 503 and a request past --timeout 504. The model is loaded and run once
        before /health answers.
        """
        import ipaddress

        from skyfuse.cli.predict import _caption_source
        from skyfuse.inference import load_predictor, parse_classes, resolve_model_dir
        from skyfuse.serving import ServeLimits, check_caption_policy, create_app
        from skyfuse.serving.server import uvicorn_config

        try:
            exposed = not ipaddress.ip_address(host).is_loopback
        except ValueError:
            exposed = host != "localhost"
        if exposed:
            err_console.print(
                f"[yellow]warning:[/yellow] binding {host}: the service is reachable from other"
                " machines and has no authentication"
            )
        check_bindable(host, port)
        model_dir = resolve_model_dir(model_dir)
        _, name, opts = _caption_source(None, backend, vlm_model, base_url, None)
        predictor = load_predictor(
            model_dir,
            classes=parse_classes(classes),
            captioner=name,
            captioner_options=opts,
            prompt=prompt,
            allow_caption_mismatch=allow_mismatch,
            device=device,
            views=views,
        )
        err_console.print(
            check_caption_policy(predictor, require_caption=require_caption),
            highlight=False,
            soft_wrap=True,
        )
        # load everything (encoders, a local VLM) now: a failure is one line, not a lifespan trace
        err_console.print(f"model warmed up in {predictor.warm_up():.1f} s", highlight=False)
        limits = ServeLimits(
            max_upload_bytes=int(max_upload_mb * 1024 * 1024),
            max_pixels=max_pixels,
            timeout_s=timeout,
            max_concurrency=concurrency,
            max_batch=max_batch,
            max_queue=max_queue,
        )
        where = Path(model_dir).resolve()
        run_name = where.parent.name if where.name == "model" else where.name
        app_ = create_app(predictor, limits, model_name=run_name)
        err_console.print(
            f"serving {model_dir} ({len(predictor.class_names)} classes) on http://{host}:{port}"
            f"  (page /, docs /docs; Ctrl-C stops)",
            highlight=False,
            soft_wrap=True,
        )
        import uvicorn

        uvicorn.Server(uvicorn_config(app_, host, port, log_level="info")).run()
