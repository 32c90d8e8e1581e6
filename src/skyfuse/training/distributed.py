"""What training code needs to be correct under DDP: ranks, per-process steps, rank-0-only results.

Why: with ``--devices N --strategy ddp`` Lightning's script launcher re-runs the whole command in N-1
more processes. Each process then trains on 1/N of the batches, so a learning-rate schedule must count
the steps of one process (`steps_per_process`); only global rank 0 may evaluate the test split and
write the run folder, and the other ranks must still return the same result to their caller
(`rank_zero_result` broadcasts it, or rank 0's error). ``--devices auto`` means one device
(`trainer_devices`): several processes only when asked for.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def process_rank() -> int:
    """Global rank of this process as the launcher set it (0 when not launched as a DDP worker).

    Lightning's script launcher starts ranks 1..n-1 with ``LOCAL_RANK`` / ``NODE_RANK`` set; torchrun
    and SLURM set ``RANK`` / ``SLURM_PROCID``. Usable before any Trainer or process group exists.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return int(dist.get_rank())
    env = os.environ
    for key in ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if env.get(key, "").strip().isdigit():
            return int(env[key])
    local = env.get("LOCAL_RANK", "0").strip()
    node = env.get("NODE_RANK", env.get("GROUP_RANK", "0")).strip()
    local_i = int(local) if local.isdigit() else 0
    node_i = int(node) if node.isdigit() else 0
    return local_i if node_i == 0 else max(1, node_i)  # any process of another node is not rank 0


def is_rank_zero() -> bool:
    return process_rank() == 0


def world_size() -> int:
    """Processes in the running process group (1 when there is none)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return int(dist.get_world_size())
    return 1


def steps_per_process(n_samples: int, batch_size: int, world: int) -> int:
    """Optimizer steps per epoch of one process: each rank gets ceil(n / world) samples (padded
    equally, as DistributedSampler and `TensorBatches` do), in batches of `batch_size`."""
    per_rank = math.ceil(max(0, n_samples) / max(1, world))
    return max(1, math.ceil(per_rank / max(1, batch_size)))


def trainer_devices(cfg: Any) -> int | str | list[int]:
    """``devices`` for the Lightning Trainer: ``auto`` is one device (the first GPU when there is
    one, else the CPU), never every device of the machine; counts and id lists pass through."""
    value = cfg.lightning_devices()
    return 1 if value == "auto" else value


def finetune_strategy(strategy: str) -> str:
    """The Lightning strategy for end-to-end training: plain DDP variants become their
    ``_find_unused_parameters_true`` form, because the Hugging Face encoders hold parameters the
    classifier never uses (e.g. poolers) and DDP refuses to reduce gradients that were never made."""
    if strategy in ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook"):
        return f"{strategy}_find_unused_parameters_true"
    return strategy


def rank_zero_result(compute: Callable[[], T]) -> T:
    """Run ``compute`` on global rank 0 only and give its value (or its error) to every rank.

    Without a process group (one process) it simply calls ``compute``. Under DDP the other ranks
    wait for rank 0 and return the same value, so code reading ``result["test"]`` works on every
    rank; an exception on rank 0 is re-raised there and reported as a `RuntimeError` elsewhere.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return compute()
    payload: list[Any] = [None]
    error: BaseException | None = None
    if dist.get_rank() == 0:
        try:
            payload[0] = ("ok", compute())
        except BaseException as exc:  # tell the other ranks before raising
            error = exc
            payload[0] = ("error", f"{type(exc).__name__}: {exc}")
    dist.broadcast_object_list(payload, src=0)
    if error is not None:
        raise error
    status, value = payload[0]
    if status != "ok":
        raise RuntimeError(f"rank 0 failed: {value}")
    return value  # type: ignore[no-any-return]


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
