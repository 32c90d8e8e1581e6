"""`skyfuse serve`: the HTTP service and web page for one model bundle.

The command parses options into `ServeSettings` (skyfuse.serving.settings), which checks and loads
everything before uvicorn starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from skyfuse.cli.common import err_console, friendly_errors
from skyfuse.cli.predict import (
    CaptionerOpt,
    CaptionPromptOpt,
    MismatchOpt,
    PredictViewsOpt,
    VlmBaseUrlOpt,
    VlmModelOpt,
)

if TYPE_CHECKING:
    from skyfuse.serving.settings import ServeSettings

ServeModelDirArg = Annotated[
    Path,
    typer.Argument(
        help="Model bundle folder (DIR/model of a `skyfuse train` or `skyfuse zeroshot` run),"
        " or that run folder DIR."
    ),
]
HostOpt = Annotated[
    str,
    typer.Option("--host", help="Address to bind; loopback unless you mean to expose it."),
]
PortOpt = Annotated[int, typer.Option("--port", "-p", min=1, max=65535, help="TCP port.")]
RequireCaptionOpt = Annotated[
    bool,
    typer.Option(
        "--require-caption",
        help="Serve a model whose caption source is unavailable (e.g. trained on human"
        " captions): requests without a caption get 422.",
    ),
]
ServeClassesOpt = Annotated[
    str | None,
    typer.Option("--classes", help="Zero-shot bundles: comma-separated class names to score."),
]
MaxUploadOpt = Annotated[
    float,
    typer.Option("--max-upload-mb", min=0.001, help="Largest request body (413 above)."),
]
MaxPixelsOpt = Annotated[
    int,
    typer.Option("--max-pixels", min=1, help="Largest decoded width x height (413 above)."),
]
RequestTimeoutOpt = Annotated[
    float,
    typer.Option(
        "--timeout", min=0.01, help="Seconds a request may take, queue included (504 after)."
    ),
]
ModelCallsOpt = Annotated[
    int, typer.Option("--concurrency", min=1, help="Model calls at once; others queue.")
]
MaxBatchOpt = Annotated[
    int,
    typer.Option(
        "--max-batch", min=1, help="Waiting requests merged into one model call (1 = off)."
    ),
]
MaxQueueOpt = Annotated[
    int, typer.Option("--max-queue", min=0, help="Requests allowed to wait; more get 503.")
]
ServeDeviceOpt = Annotated[str, typer.Option("--device", help="torch device.")]


@friendly_errors
def serve_cmd(
    model_dir: ServeModelDirArg,
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
    backend: CaptionerOpt = None,
    vlm_model: VlmModelOpt = None,
    base_url: VlmBaseUrlOpt = None,
    prompt: CaptionPromptOpt = None,
    allow_mismatch: MismatchOpt = False,
    require_caption: RequireCaptionOpt = False,
    classes: ServeClassesOpt = None,
    max_upload_mb: MaxUploadOpt = 16.0,
    max_pixels: MaxPixelsOpt = 40_000_000,
    timeout: RequestTimeoutOpt = 30.0,
    concurrency: ModelCallsOpt = 1,
    max_batch: MaxBatchOpt = 8,
    max_queue: MaxQueueOpt = 64,
    device: ServeDeviceOpt = "cpu",
    views: PredictViewsOpt = None,
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
    from skyfuse.inference.job import CaptionChoice
    from skyfuse.serving.settings import ServeSettings, build_service

    settings = ServeSettings(
        model_dir=model_dir,
        host=host,
        port=port,
        caption=CaptionChoice(None, backend, vlm_model, base_url, prompt, allow_mismatch),
        require_caption=require_caption,
        classes=classes,
        max_upload_mb=max_upload_mb,
        max_pixels=max_pixels,
        timeout=timeout,
        concurrency=concurrency,
        max_batch=max_batch,
        max_queue=max_queue,
        device=device,
        views=views,
    )
    _warn_if_exposed(settings)
    service = build_service(settings, say=_say)
    _say(
        f"serving {service.model_dir} ({len(service.predictor.class_names)} classes) on"
        f" http://{host}:{port}  (page /, docs /docs; Ctrl-C stops)"
    )
    service.serve_forever()


def _warn_if_exposed(settings: ServeSettings) -> None:
    if settings.exposed:
        err_console.print(
            f"[yellow]warning:[/yellow] binding {settings.host}: the service is reachable from"
            " other machines and has no authentication"
        )


def _say(line: str) -> None:
    """One plain line on stderr (stdout stays free for the server's own output)."""
    err_console.print(line, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add `serve` to the main application."""
    app.command("serve")(serve_cmd)


__all__ = ["register", "serve_cmd"]
