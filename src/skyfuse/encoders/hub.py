"""Resolve `hf:` model names to a local folder, offline-first, with clear errors.

A name is a local folder (used as is) or a hub id. Hub ids resolve through the Hugging Face cache with
``local_files_only`` when the hub is off (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE / SKYFUSE_NO_DOWNLOAD),
so a missing download fails at once with the fix instead of hanging on the network.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from skyfuse.encoders.common import files_fingerprint, hub_offline
from skyfuse.errors import CheckpointError

_CONFIG_PATTERNS = ["*.json", "*.txt", "*.model", "merges.txt", "vocab.*"]


def downloads_disabled() -> bool:
    """True when no network access to the hub may be attempted."""
    no_dl = os.environ.get("SKYFUSE_NO_DOWNLOAD", "").strip().lower() in {"1", "true", "yes", "on"}
    return hub_offline() or no_dl


def resolve_model_folder(name: str) -> tuple[Path, str]:
    """Return (local folder, label) for a local folder or hub id; the label goes into encoder ids."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path, path.resolve().name
    if name.startswith(("/", ".", "~")) or path.exists():
        raise CheckpointError(
            f"{path}: model folder not found; give an existing folder or a hub id"
        )
    return _snapshot(name), name


def _snapshot(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    offline = downloads_disabled()
    try:
        folder = Path(
            snapshot_download(
                repo_id,
                allow_patterns=[*_CONFIG_PATTERNS, "*.safetensors"],
                local_files_only=offline,
            )
        )
        if not weight_files(folder, required=False):
            folder = Path(
                snapshot_download(
                    repo_id,
                    allow_patterns=[*_CONFIG_PATTERNS, "pytorch_model*.bin"],
                    local_files_only=offline,
                )
            )
    except Exception as exc:
        if offline:
            raise CheckpointError(
                f"hf:{repo_id}: not in the local Hugging Face cache and the hub is offline;"
                f" download it where online (`hf download {repo_id}`) or pass a local folder"
            ) from None
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"hf:{repo_id}: cannot fetch from the hub ({reason}); check the id or pass a local folder"
        ) from None
    return folder


def weight_files(folder: Path, *, required: bool = True) -> list[Path]:
    """The weight files of a Hugging Face model folder (safetensors preferred)."""
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if not files and required:
        raise CheckpointError(
            f"{folder}: no model weights (model.safetensors or pytorch_model.bin);"
            " download the full model or point to the right folder"
        )
    return files


def weights_fingerprint(folder: Path) -> str:
    """sha256 prefix identifying the weights, so cached features follow the weights, not the name."""
    return files_fingerprint(weight_files(folder))


def read_config(folder: Path) -> dict[str, Any]:
    """The model's `config.json` as a dict, read without importing transformers."""
    path = folder / "config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(
            f"{path}: missing; download the full model or point to the right folder"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable JSON ({exc}); re-download it") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: not a model config; re-download it")
    return cfg


def config_value(cfg: dict[str, Any], folder: Path, *keys: str, tower: str | None = None) -> Any:
    """``cfg[tower][key]`` for the first key present, else transformers' AutoConfig value.

    config.json files usually hold every field, so the cheap JSON read suffices; files that rely
    on class defaults or renamed fields (attribute maps) fall back to the real config class.
    """
    part = cfg.get(tower) if tower else cfg
    if isinstance(part, dict):
        for key in keys:
            if part.get(key) is not None:
                return part[key]
    from transformers import AutoConfig

    from skyfuse.encoders.common import quiet_transformers

    try:
        with quiet_transformers():
            full = AutoConfig.from_pretrained(folder)
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{folder}: cannot load the config ({reason}); check the folder"
        ) from None
    sub = getattr(full, tower, None) if tower else full
    for key in keys:
        value = getattr(sub if sub is not None else full, key, None)
        if value is not None:
            return value
    return None


def check_weights(folder: Path, what: str) -> None:
    """Fail at creation, not at first use, on weight files that are not safetensors: reads headers only."""
    from safetensors import safe_open

    for path in weight_files(folder):
        if path.suffix != ".safetensors":
            continue
        try:
            with safe_open(str(path), framework="pt") as f:
                f.keys()
        except Exception as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CheckpointError(
                f"{folder}: cannot load the {what} ({path.name}: {reason}); check the folder"
            ) from None
