"""Helpers shared by encoders: weights fingerprints, freezing, masked pooling."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

_FINGERPRINTS: dict[tuple[str, int, int], str] = {}
_LOAD_LOCK = (
    threading.RLock()
)  # one lazy weight load at a time (rare, and never nested across threads)


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
    """Base of our encoders: frozen encoders stay in eval mode even when a parent calls .train(), and
    frozen encoders may load their weights lazily.

    Why lazy: a fully cached feature run needs only an encoder's id, width and preprocessing, which
    come from the weights hash and config files; building the network (and importing transformers)
    costs seconds that such a run should not pay. A subclass calls `_defer_weights()` in __init__
    and implements `_load_weights()`; the weights load on the first use that needs them (encode,
    parameters, state_dict, the attributes named in `_lazy_attrs`, ...). `.to()` before that is
    remembered and applied after loading. Trainable encoders always load at once.
    """

    frozen: bool = True
    _lazy_attrs: frozenset[str] = frozenset()

    # -- lazy weights ------------------------------------------------------------------------------
    def _setup_weights(self, trainable: bool) -> None:
        """End of a subclass __init__: trainable encoders load now, frozen ones on first use."""
        if trainable:
            self._load_weights()
        else:
            self._defer_weights()
        self.freeze(not trainable)

    def _defer_weights(self) -> None:
        self.__dict__["_weights_loaded"] = False
        self.__dict__["_pending_to"] = []

    def _load_weights(self) -> None:
        """Build the submodules that hold the weights (subclasses with deferred weights)."""
        raise NotImplementedError

    @property
    def weights_loaded(self) -> bool:
        """False while the weights of a lazily built encoder are still on disk (True for the thread
        that is loading them, so that calls made while loading see a loaded module)."""
        d = self.__dict__
        return bool(d.get("_weights_loaded", True)) or d.get("_loader") == threading.get_ident()

    def load_weights(self) -> EncoderModule:
        """Load deferred weights now (no-op when loaded); returns self. Thread-safe: concurrent
        first requests (a server) wait for one load instead of racing."""
        if self.weights_loaded:
            return self
        with _LOAD_LOCK:
            if self.__dict__.get("_weights_loaded", True):
                return self  # another thread loaded them while this one waited
            self.__dict__["_loader"] = threading.get_ident()
            try:
                self._load_weights()
                set_frozen(self, self.frozen)
                nn.Module.train(self, self.training and not self.frozen)
                for args, kwargs in self.__dict__.get("_pending_to", []):
                    super().to(*args, **kwargs)
                self.__dict__.pop("_pending_to", None)
                self.__dict__["_weights_loaded"] = True
            finally:
                self.__dict__.pop("_loader", None)
        return self

    def __getattr__(self, name: str) -> Any:
        if name in type(self)._lazy_attrs and not self.weights_loaded:
            self.load_weights()
            return getattr(self, name)
        return super().__getattr__(name)

    def to(self, *args: Any, **kwargs: Any) -> Any:
        if not self.weights_loaded:
            torch._C._nn._parse_to(*args, **kwargs)  # the same argument errors as nn.Module.to
            with _LOAD_LOCK:  # not while another thread replays the pending moves
                if not self.__dict__.get("_weights_loaded", True):
                    self.__dict__["_pending_to"].append((args, kwargs))
                    return self
        return super().to(*args, **kwargs)

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        self.load_weights()
        return super()._apply(fn, recurse)

    def named_modules(self, *args: Any, **kwargs: Any) -> Iterator[tuple[str, nn.Module]]:
        self.load_weights()
        return super().named_modules(*args, **kwargs)

    def named_children(self) -> Iterator[tuple[str, nn.Module]]:
        self.load_weights()
        return super().named_children()

    def named_parameters(self, *args: Any, **kwargs: Any) -> Iterator[tuple[str, nn.Parameter]]:
        self.load_weights()
        return super().named_parameters(*args, **kwargs)

    def named_buffers(self, *args: Any, **kwargs: Any) -> Iterator[tuple[str, torch.Tensor]]:
        self.load_weights()
        return super().named_buffers(*args, **kwargs)

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        self.load_weights()
        return super().state_dict(*args, **kwargs)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self.load_weights()  # a parent's load_state_dict reaches submodules through this hook
        super()._load_from_state_dict(*args, **kwargs)

    # -- freezing ------------------------------------------------------------------------------
    def freeze(self, frozen: bool = True) -> EncoderModule:
        self.frozen = frozen
        if self.weights_loaded or not frozen:
            self.load_weights()
            set_frozen(self, frozen)
        else:
            self.training = False  # applied to the submodules when they load
        return self

    def train(self, mode: bool = True) -> EncoderModule:
        if not self.weights_loaded:
            self.training = mode and not self.frozen
            return self
        return super().train(mode and not self.frozen)

    @property
    def device(self) -> torch.device:
        if not self.weights_loaded:  # where the weights will go: the last .to() that named a device
            device = torch.device("cpu")
            for args, kwargs in self.__dict__.get("_pending_to", []):
                target = torch._C._nn._parse_to(*args, **kwargs)[0]
                device = torch.device(target) if target is not None else device
            return device
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
