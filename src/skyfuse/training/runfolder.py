"""Run folders that cannot mix runs: a fingerprint of what determines a run, checked before resuming.

Why: a run folder used to resume from any checkpoint it held (and `bench` to skip any run with a
metrics.json), whatever the seed, split, captions, encoders or settings; a seed-0 model could be
reported on the seed-1 test split. Now each run folder records ``run.json``: a fingerprint of the
training settings, the split's content, the captions, the encoder ids (weights hash included), the
fusion config and the code version of the models. A run resumes (or, finished, is skipped) only when
the fingerprint matches exactly; otherwise `RunMismatchError` names what differs, and ``force``
starts afresh. Where a run executes (accelerator, devices, strategy, nodes, loader workers) is not
part of it.

Under DDP every process runs the caller's code; only global rank 0 checks, removes or writes here
(`skyfuse.training.distributed.process_rank` tells from the launcher's environment).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from skyfuse.errors import ConfigError
from skyfuse.training.distributed import is_rank_zero

RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
FINGERPRINT_FORMAT = 1
#: TrainConfig fields that say where a run executes, not what it computes
#: (and how it is logged: the logger changes no number of the run)
EXECUTION_KEYS = ("accelerator", "devices", "strategy", "num_nodes", "num_workers", "logger")
#: what `force` removes: every file a run leaves (the bundle and split too, so nothing stale remains)
RUN_OUTPUTS = (
    "checkpoints",
    METRICS_FILE,
    "report.md",
    "confusion.png",
    "confusion.json",
    "model",
    "split.json",
    "config.yaml",
    "logs",
    "curves.png",
    RUN_FILE,
)

RunState = Literal["new", "resume", "done"]


class RunMismatchError(ConfigError):
    """The run folder holds another run than the one asked for."""


def digest(value: Any) -> str:
    """sha256 of a JSON value in canonical form (sorted keys, no spaces)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def split_digest(split: Any) -> str:
    """The split's content: classes and the image list of each part, in order."""
    return digest(
        {
            "classes": list(split.classes),
            "train": list(split.train),
            "val": list(split.val),
            "test": list(split.test),
        }
    )


def captions_digest(captions: Mapping[str, Any], rels: Iterable[str]) -> str:
    """The captions of the given images (absent ones count as absent)."""
    return digest({r: captions.get(r) for r in sorted(set(rels))})


def model_code_version() -> str:
    """skyfuse's version and a digest of the model code (``skyfuse/models/*.py``): a change to the
    models makes checkpoints of an unfinished run unsafe to resume."""
    import skyfuse

    root = Path(skyfuse.__file__).parent / "models"
    h = hashlib.sha256()
    for path in sorted(root.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{skyfuse.__version__}+{h.hexdigest()[:16]}"


def run_fingerprint(
    *,
    kind: str,
    model: str,
    split: Any,
    encoders: Sequence[str],
    train_config: Mapping[str, Any] | None = None,
    fusion: Mapping[str, Any] | None = None,
    captions: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything that determines a run, as a flat-ish JSON object (see the module doc)."""
    cfg = {k: v for k, v in dict(train_config or {}).items() if k not in EXECUTION_KEYS}
    return {
        "format": FINGERPRINT_FORMAT,
        "kind": kind,
        "model": model,
        "train_config": cfg,
        "fusion": dict(fusion or {}),
        "split": split_digest(split),
        "folder": getattr(split, "fingerprint", None),
        "captions": captions,
        "encoders": list(encoders),
        "code": model_code_version(),
        **dict(extra or {}),
    }


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def _show(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 24 else text[:12] + "…"


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``key: old -> new`` for every leaf that differs, sorted by key."""
    a, b = _flatten(old), _flatten(new)
    missing = object()
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, missing), b.get(key, missing)
        if va != vb:
            sa = "absent" if va is missing else _show(va)
            sb = "absent" if vb is missing else _show(vb)
            out.append(f"{key}: {sa} -> {sb}")
    return out


def read_fingerprint(run_dir: Path) -> dict[str, Any] | None:
    """The fingerprint a run folder recorded, or None (no folder, no run.json, unreadable)."""
    try:
        raw = json.loads((Path(run_dir) / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return raw.get("fingerprint") if isinstance(raw, dict) else None


def _has_run(run_dir: Path) -> bool:
    """True when the folder holds outputs of some run (checkpoints, markers or metrics)."""
    ckpts = run_dir / "checkpoints"
    if (run_dir / METRICS_FILE).is_file():
        return True
    return ckpts.is_dir() and any(
        p.is_file() and p.suffix in (".ckpt", ".json", ".safetensors") for p in ckpts.rglob("*")
    )


def clear_run(run_dir: Path) -> None:
    """Remove every output of a run (`RUN_OUTPUTS`), keeping anything else in the folder."""
    for name in RUN_OUTPUTS:
        path = Path(run_dir) / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def open_run(
    run_dir: Path,
    fingerprint: Mapping[str, Any],
    *,
    force: bool = False,
    flag: str = "--force",
    split: Any = None,
) -> RunState:
    """Claim ``run_dir`` for the run ``fingerprint`` describes, and say what it holds.

    - ``"new"``: nothing of a run there (or ``force``: the old run's files were removed);
      the fingerprint is written (atomically) to ``run.json``.
    - ``"resume"``: an unfinished run with the same fingerprint (its checkpoints may be reused).
    - ``"done"``: a finished run (``metrics.json``) with the same fingerprint.
    A folder holding a different run, or a run without a fingerprint (an older skyfuse), raises
    `RunMismatchError` with one line naming what differs. Ranks other than 0 only read.
    A `split` (with ``save``) is written to ``split.json`` once the folder is claimed (new or
    resumed), never over the record of another run.
    """
    from skyfuse.reports.tables import write_atomic

    run_dir = Path(run_dir)
    fp = dict(fingerprint)
    done = (run_dir / METRICS_FILE).is_file()
    if not is_rank_zero():  # rank 0 ran this before the workers were launched
        return "done" if done else "resume"
    if force:
        clear_run(run_dir)
    else:
        old = read_fingerprint(run_dir)
        if old is not None:
            diff = differences(old, fp)
            if diff:
                more = f" (and {len(diff) - 3} more)" if len(diff) > 3 else ""
                raise RunMismatchError(
                    f"{run_dir}: holds a different run ({'; '.join(diff[:3])}{more});"
                    f" pass {flag} to start afresh or choose another output folder"
                )
            if not done:
                _save_split(run_dir, split)
            return "done" if done else "resume"
        if _has_run(run_dir):
            raise RunMismatchError(
                f"{run_dir}: holds a run without a fingerprint ({RUN_FILE}; made by an older"
                f" skyfuse), so it cannot be resumed safely; pass {flag} to start afresh or"
                " choose another output folder"
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(run_dir / RUN_FILE, json.dumps({"fingerprint": fp}, indent=1) + "\n")
    _save_split(run_dir, split)
    return "new"


def _save_split(run_dir: Path, split: Any) -> None:
    if split is not None and hasattr(split, "save"):
        split.save(run_dir / "split.json")
