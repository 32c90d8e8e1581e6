"""Models x seeds on one dataset: features once, a fresh seeded split per seed, mean ± std tables.

Why this shape: the field compares models on repeated seeded splits of fixed ratios; extracting
features is the slow part on a CPU, so it is done once and shared by every run. Each finished run
leaves ``runs/<model>-s<seed>/metrics.json`` and ``run.json`` (its fingerprint); a rerun skips those whose
fingerprint matches (a killed bench resumes) and refuses a folder holding other runs. Linear
probes on the encoders' pooled vectors give the floors every fusion model must clear.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from skyfuse.training.config import TrainConfig
from skyfuse.training.prepare import restrict_split
from skyfuse.training.probe import PROBE_INPUTS, linear_probe, pooled_matrix

DEFAULT_MODELS = ("image", "text", "concat", "dual")
RunHook = Callable[[dict[str, Any]], None]


def _run_row(model: str, seed: int, metrics: Mapping[str, Any], seconds: float) -> dict[str, Any]:
    test = metrics["test"]
    return {
        "model": model,
        "seed": seed,
        "oa": float(test["oa"]),
        "aa": float(test["aa"]),
        "kappa": float(test["kappa"]),
        "seconds": round(float(seconds), 2),
        **{f"entropy {k}": float(v) for k, v in (test.get("attention_entropy") or {}).items()},
    }


def _probe(features: Any, split: Any, inputs: Sequence[str], seed: int) -> dict[str, Any]:
    pooled = {
        "image": features.image_pooled.float().numpy(),
        "text": features.text_pooled.float().numpy(),
    }
    index = {r: i for i, r in enumerate(features.rels)}
    cls = {c: i for i, c in enumerate(split.classes)}

    def part(rels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        rows = np.array([index[r] for r in rels], dtype=np.int64)
        y = np.array([cls[r.split("/", 1)[0]] for r in rels], dtype=np.int64)
        return pooled_matrix(pooled, inputs, rows), y

    xt, yt = part(split.train)
    xv, yv = part(split.val) if split.val else (None, None)
    xs, ys = part(split.test)
    return {"test": linear_probe(xt, yt, xv, yv, xs, ys, split.classes, seed=seed)}


def run_bench(
    features: Any,
    folder: Any,
    *,
    models: Sequence[str] = DEFAULT_MODELS,
    seeds: Sequence[int] = (0, 1, 2),
    protocol: str | None = None,
    train_ratio: float | None = None,
    val: float = 0.1,
    cfg: TrainConfig | None = None,
    fusion: Mapping[str, Any] | None = None,
    out_dir: Path | None = None,
    image_encoder: str = "",
    text_encoder: str = "",
    prompt_id: str | None = None,
    caption_source: Mapping[str, Any] | None = None,
    encoder_names: tuple[str, str] | None = None,
    dataset: str = "",
    probes: bool = True,
    save_models: bool = False,
    plots: bool = False,
    on_run: RunHook | None = None,
    captions_digest: str | None = None,
    force: bool = False,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Train every model on every seed's split and return ``(table rows, per-run rows)``.

    Table rows have ``model, runs, oa_mean, oa_std, aa_mean, aa_std, kappa_mean, kappa_std`` (percent);
    probe rows are named ``probe-image``, ``probe-text``, ``probe-image+text``. With ``out_dir`` a
    finished run is skipped only when its ``run.json`` fingerprint matches (seed, split, captions via
    ``captions_digest``, encoders, settings); another run in its folder is a `RunMismatchError`, and
    ``force`` reruns everything afresh.
    """
    from skyfuse.data.splits import make_split
    from skyfuse.reports.tables import aggregate, write_atomic, write_tables
    from skyfuse.training.run import run_training
    from skyfuse.training.runfolder import open_run, run_fingerprint

    base = cfg or TrainConfig()
    available = set(features.rels)
    runs: list[dict[str, Any]] = []
    names = [*models, *(PROBE_INPUTS if probes else ())]
    for seed in seeds:
        split, dropped = restrict_split(
            make_split(folder, protocol=protocol, train=train_ratio, val=val, seed=seed), available
        )
        if out_dir is not None:
            split.save(out_dir / "splits" / f"seed{seed}.json")
        for name in names:
            run_dir = out_dir / "runs" / f"{name}-s{seed}" if out_dir is not None else None
            t0 = time.perf_counter()
            if name in PROBE_INPUTS:
                state = "new"
                if run_dir is not None:
                    fingerprint = run_fingerprint(
                        kind="probe",
                        model=name,
                        split=split,
                        encoders=[image_encoder, text_encoder],
                        train_config={"seed": seed},
                        captions=captions_digest,
                    )
                    state = open_run(run_dir, fingerprint, force=force)
                if run_dir is not None and state == "done":
                    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
                else:
                    metrics = _probe(features, split, PROBE_INPUTS[name], seed)
                    metrics["seconds"] = time.perf_counter() - t0
                    if run_dir is not None:
                        write_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=1) + "\n")
                seconds = float(metrics.get("seconds", 0.0))
            else:
                metrics = run_training(
                    features,
                    split,
                    model=name,
                    cfg=base.model_copy(update={"seed": seed}),
                    fusion=fusion,
                    out_dir=run_dir,
                    image_encoder=image_encoder,
                    text_encoder=text_encoder,
                    prompt_id=prompt_id,
                    caption_source=caption_source,
                    encoder_names=encoder_names,
                    dataset=dataset,
                    save_model=save_models,
                    plots=plots,
                    resume=False,
                    captions_digest=captions_digest,
                    force=force,
                    skip_finished=True,
                )
                seconds = float(metrics["seconds"])
            row = _run_row(name, seed, metrics, seconds)
            row["dropped"] = len(dropped)
            runs.append(row)
            if on_run is not None:
                on_run(row)
    table = aggregate(runs, key="model", metrics=("oa", "aa", "kappa"))
    for row in table:
        secs = [r["seconds"] for r in runs if r["model"] == row["model"]]
        row["seconds_mean"] = sum(secs) / len(secs)
    if out_dir is not None:
        write_tables(table, out_dir / "bench")
        write_tables(runs, out_dir / "runs")
        from skyfuse.reports.page import write_bench_report

        write_bench_report(out_dir)  # report.html + report.md (bench.md / runs.md stay as written)
    return table, runs
