"""Model bundles: everything a trained model needs to be used again, and nothing that unpickles.

Layout of ``model_dir``::

    bundle.json          format version, fusion config, class names, encoder ids, prompt id, the
                         training captions' source (`skyfuse.captioning.provenance`), extra
    model.safetensors    the fusion model's weights

Why this shape: the published code rebuilt models from scattered arguments (paper bug 5); here the
config travels with the weights, JSON + safetensors are safe to receive from strangers, and the write is
atomic (temporary folder + rename) so that a killed run never leaves a half bundle behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from skyfuse.errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    from skyfuse.models.config import FusionConfig

BUNDLE_FORMAT = "skyfuse-bundle"
BUNDLE_VERSION = 1
MANIFEST = "bundle.json"
WEIGHTS = "model.safetensors"


@dataclass
class ModelBundle:
    """A loaded bundle: the model (eval mode, CPU) and its metadata."""

    model: nn.Module
    config: FusionConfig
    class_names: list[str]
    image_encoder: str
    text_encoder: str
    prompt_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    #: where the training captions came from (`CaptionSource.to_dict`); None in older bundles
    caption_source: dict[str, Any] | None = None


def save_bundle(
    out_dir: Path,
    model: nn.Module,
    config: FusionConfig,
    *,
    class_names: list[str],
    image_encoder: str,
    text_encoder: str,
    prompt_id: str | None = None,
    extra: dict[str, Any] | None = None,
    caption_source: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``out_dir`` atomically (replacing an older bundle there) and return it."""
    from safetensors.torch import save_model

    out_dir = Path(out_dir)
    num_classes = getattr(config, "num_classes", len(class_names))
    if len(class_names) != num_classes:
        raise ConfigError(
            f"{out_dir}: {len(class_names)} class names for a model with {num_classes} outputs"
        )
    manifest = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "config": config.model_dump(mode="json"),
        "class_names": list(class_names),
        "image_encoder": image_encoder,
        "text_encoder": text_encoder,
        "prompt_id": prompt_id,
        "caption_source": dict(caption_source) if caption_source is not None else None,
        "extra": extra or {},
    }
    try:
        text = json.dumps(manifest, indent=2, sort_keys=False)
    except TypeError as exc:
        raise ConfigError(f"{out_dir}: bundle metadata is not JSON-serialisable ({exc})") from None
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        was_training = model.training
        model.eval()
        save_model(model, str(tmp / WEIGHTS))  # handles tied / shared weights
        model.train(was_training)
        (tmp / MANIFEST).write_text(text + "\n", encoding="utf-8")
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _replace_dir(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``; an existing ``dst`` is swapped out first and then deleted."""
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


def read_manifest(model_dir: Path) -> dict[str, Any]:
    """The parsed ``bundle.json``, checked for format and version."""
    model_dir = Path(model_dir)
    if model_dir.is_file() and model_dir.name == MANIFEST:
        model_dir = model_dir.parent
    path = model_dir / MANIFEST
    if not model_dir.is_dir():
        raise CheckpointError(
            f"{model_dir}: model folder not found; pass the DIR/model folder a training run wrote"
        )
    if not path.is_file():
        hint = (
            " (it holds a model/ folder: pass that)"
            if (model_dir / "model" / MANIFEST).is_file()
            else ""
        )
        raise CheckpointError(f"{model_dir}: no {MANIFEST}; not a skyfuse model bundle{hint}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{path}: corrupt bundle manifest ({exc}); retrain or restore the file"
        ) from None
    if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
        raise CheckpointError(
            f"{path}: not a skyfuse bundle manifest; pass the model/ folder a `skyfuse train` run wrote"
        )
    version = data.get("version")
    if not isinstance(version, int) or version > BUNDLE_VERSION:
        raise CheckpointError(
            f"{path}: bundle version {version} is newer than this skyfuse reads ({BUNDLE_VERSION}); upgrade skyfuse"
        )
    for key in ("config", "class_names", "image_encoder", "text_encoder"):
        if key not in data:
            raise CheckpointError(
                f"{path}: field {key!r} missing; the bundle is incomplete, retrain"
            )
    return data


#: Largest fusion model a bundle may ask for (parameters); real ones have a few million.
MAX_PARAMETERS = 2_000_000_000
_MAX_HEADER = 100 * 1024 * 1024


def weights_numel(weights: Path) -> int:
    """Elements stored in a safetensors file, from its header alone (nothing is loaded)."""
    import struct

    with open(weights, "rb") as fh:
        head = fh.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if not 0 < n <= _MAX_HEADER:
            raise CheckpointError(
                f"{weights}: not a safetensors file; the bundle is corrupt, retrain"
            )
        try:
            header = json.loads(fh.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CheckpointError(f"{weights}: corrupt safetensors header; retrain") from None
    total = 0
    for name, info in header.items() if isinstance(header, dict) else ():
        if name != "__metadata__" and isinstance(info, dict):
            count = 1
            for dim in info.get("shape") or []:
                count *= int(dim)
            total += count
    return total


def check_size(config: FusionConfig, weights: Path) -> int:
    """Refuse, before anything is allocated, a config that asks for more parameters than
    `MAX_PARAMETERS` or than its weights file holds (a corrupt or hostile bundle.json: width,
    levels or classes in the billions). Counts on the meta device; returns the parameter count."""
    import torch

    from skyfuse.models import create_model

    with torch.device("meta"):
        probe = create_model(config)
    wanted = sum(p.numel() for p in probe.parameters())
    what = f"width {config.width}, levels {config.levels}, {config.num_classes} classes"
    if wanted > MAX_PARAMETERS:
        raise CheckpointError(
            f"{weights.parent / MANIFEST}: the config asks for {wanted:,} parameters ({what}),"
            f" more than the {MAX_PARAMETERS:,} a skyfuse bundle may have; the file is corrupt or"
            " not from skyfuse"
        )
    have = weights_numel(weights)
    if wanted > have:
        raise CheckpointError(
            f"{weights}: weights do not fit the saved config (it asks for {wanted:,} parameters:"
            f" {what}; the file holds {have:,}); the bundle is corrupt, retrain or restore it"
        )
    return wanted


def load_bundle(model_dir: Path) -> ModelBundle:
    """Rebuild the model from its config and load the safetensors weights (strict, no pickle)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    from skyfuse.models import create_model
    from skyfuse.models.config import FusionConfig

    model_dir = Path(model_dir)
    if model_dir.is_file() and model_dir.name == MANIFEST:
        model_dir = model_dir.parent
    data = read_manifest(model_dir)
    config = FusionConfig.from_dict(data["config"], source=str(model_dir / MANIFEST))
    class_names = [str(c) for c in data["class_names"]]
    if len(class_names) != config.num_classes:
        raise CheckpointError(
            f"{model_dir / MANIFEST}: {len(class_names)} class names but num_classes={config.num_classes}"
        )
    weights = model_dir / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{weights}: weights missing; the bundle is incomplete, retrain")
    check_size(config, weights)
    model = create_model(config)
    try:
        load_model(model, str(weights), strict=True, device="cpu")
    except (SafetensorError, RuntimeError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{weights}: weights do not fit the saved config ({first[:200]})"
        ) from None
    model.eval()
    return ModelBundle(
        model=model,
        config=config,
        class_names=class_names,
        image_encoder=str(data["image_encoder"]),
        text_encoder=str(data["text_encoder"]),
        prompt_id=data.get("prompt_id"),
        extra=dict(data.get("extra") or {}),
        path=model_dir,
        caption_source=data.get("caption_source")
        if isinstance(data.get("caption_source"), dict)
        else None,
    )
