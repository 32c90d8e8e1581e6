"""Helpers shared by encoders: weights fingerprints, freezing, masked pooling."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

_FINGERPRINTS: dict[tuple[str, int, int], str] = {}


def file_fingerprint(path: Path, length: int = 12) -> str:
    """sha256 prefix of a weights file; memoised by (path, size, mtime) so it is hashed once per process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FINGERPRINTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 22):
                h.update(block)
        _FINGERPRINTS[key] = h.hexdigest()
    return _FINGERPRINTS[key][:length]


def files_fingerprint(paths: Iterable[Path], length: int = 12) -> str:
    """One fingerprint for several weight shards (order-independent)."""
    parts = sorted(file_fingerprint(p, 64) for p in paths)
    if len(parts) == 1:
        return parts[0][:length]
    return hashlib.sha256("".join(parts).encode()).hexdigest()[:length]


def set_frozen(module: nn.Module, frozen: bool) -> None:
    """Frozen: no gradients and eval mode (dropout / batch-norm statistics fixed)."""
    module.requires_grad_(not frozen)
    if frozen:
        module.eval()


class EncoderModule(nn.Module):
    """Base of our encoders: a frozen encoder stays in eval mode even when a parent calls .train()."""

    frozen: bool = True

    def freeze(self, frozen: bool = True) -> EncoderModule:
        self.frozen = frozen
        set_frozen(self, frozen)
        return self

    def train(self, mode: bool = True) -> EncoderModule:
        return super().train(mode and not self.frozen)

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens only (mask True = real); all-padding rows give zeros, not NaN."""
    w = mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * w).sum(1) / w.sum(1).clamp_min(1.0)


def hub_offline() -> bool:
    """True when Hugging Face hub access is switched off (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return any(v.strip().lower() in {"1", "true", "yes", "on"} for v in flags)


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' per-load progress bar and load reports (e.g. unused vision weights of a
    CLIP checkpoint when only its text tower is loaded); our own errors say what matters."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    level = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
