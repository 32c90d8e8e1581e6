"""HTTP service: FastAPI app over a `Predictor`, its limits, and the web page at `/`."""

from __future__ import annotations

from skyfuse.serving.app import check_caption_policy, create_app
from skyfuse.serving.limits import ServeLimits

__all__ = ["ServeLimits", "check_caption_policy", "create_app"]
