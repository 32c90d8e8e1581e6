"""The HTTP service: FastAPI over a `Predictor`, with a small web page at `/`.

Routes: POST /predict (multipart `image`, optional `caption`, `top_k`, `explain`), GET /health,
GET /classes, GET / (the page), and FastAPI's /docs + /openapi.json. Every failure is a JSON
``{"detail": ...}`` with a status that says whose fault it was (413 too large, 415 not an accepted
image format, 422 bad input or a caption this model needs, 502 a caption that failed, 503 busy or
no usable captioner, 504 too slow), all declared in the OpenAPI document; no request can take the
server down. The model runs once at start-up, before the server accepts connections.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import Image
from pydantic import BaseModel

from skyfuse.data.images import decode_image
from skyfuse.errors import ImageDecodeError, SkyfuseError
from skyfuse.serving.batching import BatchingGate
from skyfuse.serving.limits import BodySizeLimit, GateError, ServeLimits, sniff_image_type

log = logging.getLogger("skyfuse.serving")


#: The upload formats the server accepts (sniffed from the bytes; anything else gets 415).
ACCEPTED_MEDIA_TYPES = ("image/jpeg", "image/png", "image/tiff", "image/webp", "image/bmp")
_FORMATS_TEXT = "JPEG, PNG, TIFF, WebP or BMP"


class ServablePredictor(Protocol):
    """What the service needs from a predictor (`skyfuse.inference.Predictor` fits): `predict`
    makes a None caption under its caption policy and returns records with `caption_source`,
    `caption_mismatch` and, for a caption that failed, `error` / `error_status`."""

    class_names: list[str]

    def predict(
        self,
        images: list[Image.Image],
        captions: list[str | None] | None = None,
        top_k: int = 5,
        *,
        explain: bool = False,
    ) -> list[Any]: ...


def check_caption_policy(predictor: Any, *, require_caption: bool = False) -> str:
    """Refuse at start-up (CaptionRefused) to serve a model whose training caption source cannot
    be used and that cannot predict from the image alone, unless `require_caption` (requests
    without a caption then get 422). Returns a line saying what requests without a caption get."""
    from skyfuse.inference.captions import CaptionRefused

    policy = getattr(predictor, "caption_policy", None)
    if policy is None:
        return "captions: requests without a caption are captioned by the predictor"
    if policy.mode == "refuse":
        if not require_caption:
            raise CaptionRefused(
                f"{policy.refusal}; or pass --require-caption to answer only requests that carry"
                " a caption"
            )
        return (
            f"captions: trained on {policy.trained.describe()}; requests without a caption get 422"
            " (--require-caption)"
        )
    return str(policy.describe())


@dataclass(frozen=True)
class _Request:
    data: bytes
    filename: str
    caption: str | None
    top_k: int
    explain: bool


@dataclass
class _Outcome:
    top_k: list[dict[str, Any]]
    caption: str | None
    caption_source: str
    caption_mismatch: bool
    overlay: str | None
    words: list[dict[str, Any]] | None


def _decode(data: bytes, filename: str, limits: ServeLimits) -> Image.Image:
    """Bytes -> RGB image, or a GateError with 415 / 413 / 422 and a one-line reason."""
    kind = sniff_image_type(data)
    if kind is None:
        raise GateError(
            415, f"{filename}: not an accepted image format; send a {_FORMATS_TEXT} file"
        )
    try:
        return decode_image(data, filename, max_pixels=limits.max_pixels)
    except ImageDecodeError as exc:
        if "exceeds the limit" in exc.reason:
            raise GateError(
                413,
                f"{filename}: image has more pixels than the server's limit of {limits.max_pixels}",
            ) from None
        raise GateError(422, f"{filename}: {exc.reason}") from None


def _overlay_data_url(image: Image.Image, explanation: Any) -> str | None:
    from skyfuse.reports.attention import overlay, region_heatmap

    heat = region_heatmap(explanation)
    if heat is None:
        return None
    img = overlay(image, heat)
    img.thumbnail((512, 512))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _word_weights(explanation: Any) -> list[dict[str, Any]] | None:
    from skyfuse.reports.attention import word_weights

    pairs = word_weights(explanation)
    return None if pairs is None else [{"word": w, "weight": round(x, 5)} for w, x in pairs]


def _run_batch(
    predictor: ServablePredictor, limits: ServeLimits, reqs: list[_Request]
) -> list[Any]:
    """Decode, caption what has no caption, and classify a batch in one model call; a request that
    fails (bad image) gets its own error and the others still get answers."""
    results: list[Any] = [None] * len(reqs)
    images: dict[int, Image.Image] = {}
    for i, r in enumerate(reqs):
        try:
            images[i] = _decode(r.data, r.filename, limits)
        except GateError as exc:
            results[i] = exc
    idx = list(images)
    if not idx:
        return results
    try:
        caps: list[str | None] = [reqs[i].caption for i in idx]
        k = max(reqs[i].top_k for i in idx)
        explain = any(reqs[i].explain for i in idx)
        preds = predictor.predict([images[i] for i in idx], caps, k, explain=explain)
    except Exception as exc:
        if len(idx) == 1:
            raise _as_gate_error(exc) from None
        # isolate the request that broke the batch: run each alone
        for i in idx:
            try:
                results[i] = _run_batch(predictor, limits, [reqs[i]])[0]
            except Exception as exc:
                results[i] = exc
        return results
    for i, pred in zip(idx, preds, strict=True):
        r = reqs[i]
        if getattr(pred, "error", None) is not None:  # its caption failed: never scored without
            results[i] = GateError(int(getattr(pred, "error_status", None) or 502), pred.error)
            continue
        overlay = words = None
        if r.explain and pred.explanation is not None:
            overlay = _overlay_data_url(images[i], pred.explanation)
            words = _word_weights(pred.explanation)
        top = [t.to_dict() for t in pred.top_k[: r.top_k]]
        source = str(getattr(pred, "caption_source", "given" if r.caption else "generated"))
        mismatch = bool(getattr(pred, "caption_mismatch", False))
        results[i] = _Outcome(top, pred.caption, source, mismatch, overlay, words)
    return results


def _as_gate_error(exc: Exception) -> Exception:
    """Caption problems as the statuses the API declares: a model that needs a caption 422, a
    captioner that failed 502 or cannot run 503; anything else unchanged."""
    from skyfuse.inference.captions import CaptionError, CaptionRefused

    if isinstance(exc, CaptionRefused):
        return GateError(422, f"this model needs a caption: {exc}")
    if isinstance(exc, CaptionError):
        return GateError(exc.status, str(exc))
    return exc


class ErrorBody(BaseModel):
    """Every failure: one line saying what went wrong and what to do."""

    detail: str


class InputErrorBody(BaseModel):
    """A refused input: one line, or FastAPI's list of invalid form fields."""

    detail: str | list[dict[str, Any]]


class TopLabel(BaseModel):
    label: str
    prob: float


class PredictBody(BaseModel):
    """A prediction. `caption_source`: "given", the captioner's id, or "none" (predicted from the
    image alone, caption null); `caption_mismatch`: the caption is of another kind than the
    model's training captions."""

    top_k: list[TopLabel]
    caption: str | None
    caption_source: str
    caption_mismatch: bool
    latency_ms: float
    attention_overlay: str | None = None
    attention_words: list[dict[str, Any]] | None = None


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


#: Every status /predict answers besides 200, for the OpenAPI document.
PREDICT_RESPONSES: dict[int | str, dict[str, Any]] = {
    413: _error("Upload or decoded image larger than the server's limits"),
    415: _error(f"Not an accepted image format ({_FORMATS_TEXT})"),
    422: {
        "model": InputErrorBody,
        "description": "Invalid form fields, a corrupt image, or a caption this model needs",
    },
    502: _error("The captioner failed on this image"),
    503: _error("Server busy, or the captioner cannot be used"),
    504: _error("No answer within the server's timeout"),
}

#: The multipart encoding of /predict: which media types the `image` part may have.
PREDICT_OPENAPI_EXTRA: dict[str, Any] = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "encoding": {"image": {"contentType": ", ".join(ACCEPTED_MEDIA_TYPES)}}
            }
        }
    }
}


def create_app(
    predictor: ServablePredictor,
    limits: ServeLimits | None = None,
    *,
    title: str = "skyfuse",
    model_name: str = "",
) -> FastAPI:
    """Build the FastAPI application around a loaded predictor."""
    limits = limits or ServeLimits()
    gates: dict[int, BatchingGate] = {}

    def gate() -> BatchingGate:
        # one gate per event loop (the server has one; test clients may start several)
        loop_id = id(asyncio.get_running_loop())
        if loop_id not in gates:
            gates[loop_id] = BatchingGate(
                lambda reqs: _run_batch(predictor, limits, reqs),
                max_concurrency=limits.max_concurrency,
                max_batch=limits.max_batch,
                max_queue=limits.max_queue,
            )
        return gates[loop_id]

    warm: dict[str, Any] = {"ready": False, "warm_up_s": None}

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # load and run the model once before the server accepts connections, so that /health
        # answering means the first request is as fast as the next ones
        warm_up = getattr(predictor, "warm_up", None)
        if callable(warm_up):
            try:
                warm["warm_up_s"] = await asyncio.get_running_loop().run_in_executor(None, warm_up)
            except SkyfuseError as exc:  # e.g. the captioner cannot load: its requests get 503
                log.warning("warm-up failed: %s", exc)
                warm["warm_up_error"] = str(exc)
        warm["ready"] = True
        gate().start()
        try:
            yield
        finally:
            loop_id = id(asyncio.get_running_loop())
            if loop_id in gates:
                await gates.pop(loop_id).close()

    app = FastAPI(
        title=f"{title} scene classifier",
        description="Remote sensing scene classification with captions fused by dual cross-attention.",
        version=_version(),
        lifespan=lifespan,
    )
    app.state.predictor = predictor
    app.state.limits = limits

    @app.exception_handler(GateError)
    async def _gate_error(_: Request, exc: GateError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(SkyfuseError)
    async def _skyfuse_error(_: Request, exc: SkyfuseError) -> JSONResponse:
        gate_error = _as_gate_error(exc)
        if isinstance(gate_error, GateError):
            return JSONResponse({"detail": gate_error.message}, status_code=gate_error.status)
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("request failed")
        return JSONResponse(
            {"detail": f"internal error ({type(exc).__name__}); see the server log"},
            status_code=500,
        )

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        html = resources.files("skyfuse.serving").joinpath("static/index.html").read_text("utf-8")
        return HTMLResponse(html)

    @app.get("/health", summary="Liveness and load")
    async def health() -> dict[str, Any]:
        g = gate()
        policy = getattr(predictor, "caption_policy", None)
        return {
            "status": "ok",
            "ready": warm["ready"],
            "warm_up_s": warm["warm_up_s"],
            **({"warm_up_error": warm["warm_up_error"]} if "warm_up_error" in warm else {}),
            "model": model_name,
            "classes": len(predictor.class_names),
            "training_captions": policy.trained.id if policy is not None else None,
            "captions_when_absent": (
                (policy.source_id if policy.mode != "refuse" else "required")
                if policy is not None
                else None
            ),
            "running": g.running,
            "waiting": g.waiting,
            "batches": g.batches,
            "requests_handled": g.items,
        }

    @app.get("/classes", summary="The class names, in the model's order")
    async def classes() -> dict[str, Any]:
        return {"classes": list(predictor.class_names)}

    @app.post(
        "/predict",
        summary="Classify one image (caption optional: made from the training caption source)",
        response_model=PredictBody,
        response_model_exclude_unset=True,
        responses=PREDICT_RESPONSES,
        openapi_extra=PREDICT_OPENAPI_EXTRA,
    )
    async def predict(
        image: UploadFile = File(..., description=f"{_FORMATS_TEXT} image"),
        caption: str | None = Form(None, description="caption to use instead of generating one"),
        top_k: int = Form(5, ge=1, description="how many labels to return"),
        explain: bool = Form(False, description="also return the attention overlay (PNG data URL)"),
    ) -> dict[str, Any]:
        t0 = time.perf_counter()
        if caption is not None and len(caption) > limits.max_caption_chars:
            raise GateError(422, f"caption longer than {limits.max_caption_chars} characters")
        data = await image.read()
        given = caption.strip() if caption and caption.strip() else None
        req = _Request(
            data, image.filename or "upload", given, min(top_k, limits.max_top_k), explain
        )
        out: _Outcome = await gate().submit(req, limits.timeout_s)
        result: dict[str, Any] = {
            "top_k": out.top_k,
            "caption": out.caption,
            "caption_source": out.caption_source,
            "caption_mismatch": out.caption_mismatch,
            "latency_ms": round((time.perf_counter() - t0) * 1000.0, 2),
        }
        if explain:
            result["attention_overlay"] = out.overlay
            result["attention_words"] = out.words
        return result

    app.add_middleware(BodySizeLimit, max_bytes=limits.max_upload_bytes)
    return app


def _version() -> str:
    from skyfuse import __version__

    return str(__version__)
