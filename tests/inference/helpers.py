"""Shared by the inference, serving, export, CLI and browser tests: the bundled offline encoders
(loaded once per process) and a tiny randomly initialised `dual` bundle written by `save_bundle`."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

CLASSES = ["beach", "desert", "forest", "water"]


@functools.cache
def encoders() -> tuple[Any, Any]:
    from skyfuse.encoders import create_image_encoder, create_text_encoder

    return create_image_encoder("efficientnet-lite0"), create_text_encoder("minilm")


def make_bundle(
    out: Path, *, model: str = "dual", classes: list[str] | None = None, seed: int = 0
) -> Path:
    import torch

    from skyfuse.models import FusionConfig, create_model
    from skyfuse.training.bundle import save_bundle

    image_encoder, text_encoder = encoders()
    names = list(classes or CLASSES)
    cfg = FusionConfig(
        model=model,
        image_dim=image_encoder.dim,
        text_dim=text_encoder.dim,
        num_classes=len(names),
        width=32,
        heads=2,
        levels=2,
    )
    torch.manual_seed(seed)
    net = create_model(cfg)
    return save_bundle(
        out,
        net,
        cfg,
        class_names=names,
        image_encoder=image_encoder.encoder_id,
        text_encoder=text_encoder.encoder_id,
        prompt_id="ground",
    )


def make_predictor(model_dir: Path, **kw: Any) -> Any:
    from skyfuse.inference import Predictor

    image_encoder, text_encoder = encoders()
    return Predictor(model_dir, image_encoder=image_encoder, text_encoder=text_encoder, **kw)


def random_image(size: int = 64, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8), mode="RGB")


def png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    import io

    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()
