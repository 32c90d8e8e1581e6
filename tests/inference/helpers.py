"""Shared by the inference, serving, export, CLI and browser tests: tiny random Hugging Face encoders
(built once per process) and a randomly initialised `dual` bundle over them written by `save_bundle`."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

CLASSES = ["beach", "desert", "forest", "water"]


@functools.cache
def tiny_folder() -> Path:
    """Tiny random ViT and BERT (tests.encoders.tiny_models) in a temp folder, once per process."""
    import atexit
    import shutil
    import tempfile

    from tests.encoders import tiny_models

    root = Path(tempfile.mkdtemp(prefix="skyfuse-tiny-"))
    atexit.register(shutil.rmtree, root, True)
    tiny_models.make_vit(root / "vit")
    tiny_models.make_bert(root / "bert")
    return root


def encoder_specs() -> tuple[str, str]:
    """The registry names a user would give (and a bundle stores): hf:<local folder>."""
    root = tiny_folder()
    return f"hf:{root / 'vit'}", f"hf:{root / 'bert'}"


@functools.cache
def encoders() -> tuple[Any, Any]:
    """Tiny ViT (32 px, 4 x 4 patches + CLS) and tiny BERT encoders, built once per process."""
    from skyfuse.encoders import create_image_encoder, create_text_encoder

    image_spec, text_spec = encoder_specs()
    return create_image_encoder(image_spec), create_text_encoder(text_spec)


def make_bundle(
    out: Path,
    *,
    model: str = "dual",
    classes: list[str] | None = None,
    seed: int = 0,
    ids: tuple[str, str] | None = None,
    caption_source: dict[str, Any] | str | None = "attributes",
    fusion: dict[str, Any] | None = None,
) -> Path:
    """A randomly initialised fusion model over the tiny encoders, saved with `save_bundle`.

    `caption_source`: where its "training captions" came from: ``"attributes"`` (the offline
    attribute captioner, default), ``"human"`` (a human caption file), a source dict, or None (an
    old bundle that records none); `fusion`: more FusionConfig fields."""
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
        **(fusion or {}),
    )
    torch.manual_seed(seed)
    net = create_model(cfg)
    # as training runs write them: full encoder ids, plus the names the user gave in `extra`
    image_id, text_id = ids or (image_encoder.encoder_id, text_encoder.encoder_id)
    image_name, text_name = encoder_specs()
    extra = {} if ids else {"image_encoder_name": image_name, "text_encoder_name": text_name}
    return save_bundle(
        out,
        net,
        cfg,
        class_names=names,
        image_encoder=image_id,
        text_encoder=text_id,
        prompt_id="ground",
        extra=extra,
        caption_source=caption_source_dict(caption_source),
    )


def caption_source_dict(spec: dict[str, Any] | str | None) -> dict[str, Any] | None:
    """A recorded training caption source: "attributes", "human", a dict, or None (unrecorded)."""
    from skyfuse.captioning.attributes import VERSION
    from skyfuse.captioning.provenance import CaptionSource

    if spec == "attributes":
        return CaptionSource(
            kind="captioner", backend="attributes", model=VERSION, attributes_version=VERSION
        ).to_dict()
    if spec == "human":
        return CaptionSource(kind="files", file="/data/rsicd/dataset_rsicd.json").to_dict()
    return spec if not isinstance(spec, str) else None


def make_zeroshot_bundle(out: Path, *, seen: list[str] | None = None) -> Path:
    """A randomly initialised zero-shot (semantic head) bundle over the tiny encoders."""
    import torch

    from skyfuse.models import FusionConfig
    from skyfuse.zeroshot.head import SemanticHead
    from skyfuse.zeroshot.model import save_zeroshot_model

    image_encoder, text_encoder = encoders()
    base = FusionConfig(
        model="dual",
        image_dim=image_encoder.dim,
        text_dim=text_encoder.dim,
        num_classes=2,
        width=32,
        heads=2,
        levels=1,
    )
    torch.manual_seed(0)
    image_name, text_name = encoder_specs()
    return save_zeroshot_model(
        out,
        SemanticHead.build(base),
        seen_classes=seen or CLASSES,
        image_encoder=image_name,
        text_encoder=text_name,
        image_encoder_id=image_encoder.encoder_id,
        text_encoder_id=text_encoder.encoder_id,
        prompt_id="ground",
        caption_source=caption_source_dict("attributes"),
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
