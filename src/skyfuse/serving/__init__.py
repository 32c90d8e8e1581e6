"""HTTP service: FastAPI app over a `Predictor`, its limits, and the web page at `/`."""

from __future__ import annotations

from skyfuse.serving.app import check_caption_policy, create_app
from skyfuse.serving.limits import ServeLimits
from skyfuse.serving.settings import ServeSettings, build_service

__all__ = [
    "ServeLimits",
    "ServeSettings",
    "build_service",
    "check_caption_policy",
    "create_app",
]
