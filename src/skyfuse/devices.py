"""Checking a user-given torch device once, up front.

Why: torch reports a bad device string or a missing GPU with a traceback from deep inside the first
``.to()``, after models are loaded and output files opened; every verb that takes ``--device`` checks
it here first and fails with one line.
"""

from __future__ import annotations

import torch

from skyfuse.errors import ConfigError


def check_device(device: str | torch.device) -> torch.device:
    """A torch device that exists here, or a one-line `ConfigError` (instead of torch's assertion
    deep inside the first `.to()`)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(
            f"--device {device}: not a torch device; use cpu, cuda, cuda:N or mps"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: no CUDA GPU here; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here"
            )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {device}: MPS is not available here; use --device cpu")
    return dev
