"""Finished runs read back from their folders, grouped by model and settings, with mean ± std over seeds.

Why: `skyfuse train`, `evaluate` and `bench` each leave folders (``metrics.json`` per run; a bench
folder holds ``runs/<model>-s<seed>/``); comparing them by hand means opening a dozen JSON files.
`collect_runs` reads any mix of run and bench folders into `RunRecord` s; `group_runs` puts runs of
the same model *and* the same settings together (seeds apart), so ``dual`` trained for 20 epochs and
``dual`` trained for 50 are two rows, each labelled with the settings that tell them apart.

Runs whose class lists differ (another dataset, or another class subset) are refused with a
`ConfigError` naming two such folders: per-class scores and confusion matrices cannot be set side by
side, and OA over different classes is not comparable. Runs on the same classes from different dataset
paths are accepted (a copied folder is still the same data); the page lists the datasets it covers.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skyfuse.errors import ConfigError
from skyfuse.reports.tables import mean_std

METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.yaml"
LOG_FILE = Path("logs") / "metrics.csv"
#: the parts of metrics.json that are settings (the rest is results)
SETTING_KEYS = (
    "model",
    "dataset",
    "protocol",
    "seed",
    "part",
    "split",
    "encoders",
    "captions",
    "caption_source",
    "fusion_config",
    "train_config",
)
#: settings that change with every seed, every write or every folder, or say only where a run
#: executed: they never tell two groups apart (they still show among a run's differences)
_PER_SEED = re.compile(
    r"(^|\.)(seed|seeds|fingerprint|split_digest|written|time|seconds|out|cache_dir|version"
    r"|accelerator|devices|strategy|num_nodes|num_workers|logger|precision)$"
)
#: keys of a bench's config.yaml that describe the whole grid, not one of its runs
_BENCH_ONLY = ("models", "seeds", "probes", "save_models")


@dataclass
class RunRecord:
    """One finished run as the report needs it; scores are fractions (as in ``metrics.json``)."""

    path: Path
    name: str
    model: str
    seed: int | None
    kind: str  # "train" (a trained model), "evaluate" (a bundle scored), "probe" (a bench floor)
    classes: list[str]
    dataset: str
    oa: float
    aa: float
    kappa: float
    f1: list[float]  # per class, in ``classes`` order
    confusion: list[list[int]]  # rows = truth, columns = prediction
    settings: dict[str, Any] = field(default_factory=dict)  # flat, dotted keys
    curves: list[dict[str, float]] = field(default_factory=list)  # one row per epoch
    chosen_epoch: int | None = None  # 0-based epoch whose weights were kept
    refit_curves: list[dict[str, float]] | None = None  # a refit on train+val after selection
    seconds: float | None = None


@dataclass
class RunGroup:
    """Runs of one model with the same settings (seeds apart); scores in percent."""

    label: str
    model: str
    runs: list[RunRecord]
    distinguishing: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.runs)

    def mean_std(self, metric: str) -> tuple[float, float]:
        """Mean and sample std (ddof=1; 0 for one run) of ``oa``, ``aa`` or ``kappa``, in percent."""
        return mean_std([100.0 * float(getattr(r, metric)) for r in self.runs])

    def f1_mean(self) -> list[float]:
        """Per-class F1 averaged over the group's runs, in percent."""
        k = len(self.runs[0].f1)
        return [100.0 * sum(r.f1[i] for r in self.runs) / self.n for i in range(k)]

    def confusion_sum(self) -> list[list[int]]:
        """The runs' confusion matrices added up (counts; rows = truth)."""
        k = len(self.runs[0].confusion)
        return [[sum(r.confusion[i][j] for r in self.runs) for j in range(k)] for i in range(k)]


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys: ``{"a": {"b": 1}}`` -> ``{"a.b": 1}``.

    Lists stay values (a list of classes is one setting); an empty mapping is kept as ``{}``.
    """
    if isinstance(value, Mapping):
        if not value and prefix:
            return {prefix: {}}
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


class _Absent:
    """The value of a setting one side does not record (distinct from a recorded ``None``)."""

    def __repr__(self) -> str:
        return "absent"


ABSENT: Any = _Absent()


def config_diff(
    reference: Mapping[str, Any], other: Mapping[str, Any]
) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (reference value, other value)}`` for every setting that differs, sorted by
    key; both sides are flattened first, and a key only one side records shows `ABSENT` on the other."""
    a, b = flatten(reference), flatten(other)
    out: dict[str, tuple[Any, Any]] = {}
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, ABSENT), b.get(key, ABSENT)
        if va is ABSENT or vb is ABSENT or va != vb:
            out[key] = (va, vb)
    return out


def is_run_folder(path: Path) -> bool:
    return (Path(path) / METRICS_FILE).is_file()


def bench_run_folders(path: Path) -> list[Path]:
    """The finished runs of a bench folder (``runs/*/metrics.json``), sorted by name; [] when none."""
    runs = Path(path) / "runs"
    return sorted(p.parent for p in runs.glob(f"*/{METRICS_FILE}")) if runs.is_dir() else []


def _bench_order(path: Path, run_dirs: list[Path]) -> list[Path]:
    """Run folders in the bench's model order (first appearance in ``runs.csv``), then by seed;
    folders ``runs.csv`` does not name go last, by name."""
    order: dict[str, int] = {}
    table = Path(path) / "runs.csv"
    if table.is_file():
        with table.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                order.setdefault(str(row.get("model")), len(order))

    def key(p: Path) -> tuple[int, int, str]:
        m = re.fullmatch(r"(.+)-s(\d+)", p.name)
        if m is None:
            return (len(order), 0, p.name)
        return (order.get(m.group(1), len(order)), int(m.group(2)), p.name)

    return sorted(run_dirs, key=key)


def collect_runs(dirs: Iterable[Path | str]) -> list[RunRecord]:
    """Every finished run under ``dirs``: a run folder (``metrics.json``) is one run, a bench folder
    (``runs/*/metrics.json``) is all of its runs. A folder given twice (or a bench run given on its
    own too) counts once. Raises `ConfigError` for a folder that is neither, a ``metrics.json`` that
    is not a classification run (e.g. `skyfuse zeroshot` output), or runs over different classes."""
    seen: set[Path] = set()
    records: list[RunRecord] = []
    for d in dirs:
        path = Path(d)
        if not path.is_dir():
            raise ConfigError(
                f"{path}: not a folder; give run folders (with metrics.json) or bench folders "
                "(with runs/*/metrics.json)"
            )
        bench = bench_run_folders(path)
        if bench:
            found = [(p, f"{path.resolve().name}/{p.name}") for p in _bench_order(path, bench)]
        elif is_run_folder(path):
            found = [(path, path.resolve().name)]
        else:
            raise ConfigError(
                f"{path}: neither a run folder (no metrics.json) nor a bench folder (no "
                "runs/*/metrics.json); give the --out folder of skyfuse train, evaluate or bench"
            )
        for run_dir, name in found:
            key = run_dir.resolve()
            if key not in seen:
                seen.add(key)
                records.append(read_run(run_dir, name=name))
    if not records:  # pragma: no cover - every accepted folder holds at least one run
        raise ConfigError("no runs given; pass run or bench folders")
    _unique_names(records)
    _check_same_classes(records)
    return records


def _unique_names(records: list[RunRecord]) -> None:
    counts: dict[str, int] = {}
    for r in records:
        counts[r.name] = counts.get(r.name, 0) + 1
    for r in records:
        if counts[r.name] > 1:
            r.name = f"{r.path.resolve().parent.name}/{r.name}"


def _check_same_classes(records: Sequence[RunRecord]) -> None:
    first = records[0]
    for r in records[1:]:
        if r.classes != first.classes:
            raise ConfigError(
                f"{r.path}: its classes ({_short(r.classes)}) differ from those of {first.path} "
                f"({_short(first.classes)}); report runs over one class list at a time"
            )


def _short(names: Sequence[str], k: int = 5) -> str:
    shown = ", ".join(names[:k])
    return f"{len(names)}: {shown}{', ...' if len(names) > k else ''}"


def read_run(run_dir: Path, *, name: str | None = None) -> RunRecord:
    """One run folder as a `RunRecord` (settings from ``config.yaml`` when present, else from
    ``metrics.json`` and ``run.json``; curves from ``logs/metrics.csv`` when present, else from the
    training history in ``metrics.json``)."""
    run_dir = Path(run_dir)
    path = run_dir / METRICS_FILE
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{path}: unreadable ({exc}); rerun the run or leave its folder out"
        ) from exc
    test = metrics.get("test") if isinstance(metrics, Mapping) else None
    if not isinstance(test, Mapping) or not {"oa", "aa", "kappa", "confusion"} <= set(test):
        raise ConfigError(
            f"{path}: not a classification run (no test OA, AA, kappa and confusion); "
            "skyfuse report reads the output of train, evaluate and bench"
        )
    fingerprint = _read_json(run_dir / "run.json").get("fingerprint") or {}
    model, seed = _model_and_seed(run_dir, metrics, fingerprint)
    classes = [str(c) for c in (test.get("class_names") or list(test.get("per_class") or {}))]
    per_class = test.get("per_class") or {}
    kind = (
        "probe"
        if fingerprint.get("kind") == "probe" or model.startswith("probe-")
        else ("evaluate" if "part" in metrics else "train")
    )
    curves, chosen, refit = _curves(run_dir, metrics)
    return RunRecord(
        path=run_dir,
        name=name or run_dir.resolve().name,
        model=model,
        seed=seed,
        kind=kind,
        classes=classes,
        dataset=str(metrics.get("dataset") or ""),
        oa=float(test["oa"]),
        aa=float(test["aa"]),
        kappa=float(test["kappa"]),
        f1=[float((per_class.get(c) or {}).get("f1", math.nan)) for c in classes],
        confusion=[[int(v) for v in row] for row in test["confusion"]],
        settings=_settings(run_dir, metrics, fingerprint, model, seed),
        curves=curves,
        chosen_epoch=chosen,
        refit_curves=refit,
        seconds=float(metrics["seconds"]) if metrics.get("seconds") is not None else None,
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _model_and_seed(
    run_dir: Path, metrics: Mapping[str, Any], fingerprint: Mapping[str, Any]
) -> tuple[str, int | None]:
    model = metrics.get("model") or fingerprint.get("model")
    seed = metrics.get("seed")
    if seed is None:
        seed = (fingerprint.get("train_config") or {}).get("seed")
    match = re.fullmatch(r"(.+)-s(\d+)", run_dir.name)  # bench names runs <model>-s<seed>
    if match:
        model = model or match.group(1)
        seed = int(match.group(2)) if seed is None else seed
    return str(model or run_dir.name), (int(seed) if seed is not None else None)


def _settings(
    run_dir: Path,
    metrics: Mapping[str, Any],
    fingerprint: Mapping[str, Any],
    model: str,
    seed: int | None,
) -> dict[str, Any]:
    doc = _read_yaml(run_dir / CONFIG_FILE)
    if doc is not None:
        doc.pop("out", None)  # where it was written: the report names the folder anyway
        return flatten(doc)
    bench_doc = _read_yaml(run_dir.parent.parent / CONFIG_FILE)
    if bench_doc is not None and run_dir.parent.name == "runs" and bench_doc.get("kind") == "bench":
        return flatten(bench_run_config(bench_doc, model, seed))
    picked = {k: metrics[k] for k in SETTING_KEYS if k in metrics}
    if not picked and fingerprint:  # a bench probe records its settings only in run.json
        picked = {
            "model": fingerprint.get("model"),
            "kind": fingerprint.get("kind"),
            "encoders": fingerprint.get("encoders"),
            "train_config": fingerprint.get("train_config"),
        }
    return flatten(picked)


def _read_yaml(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    import yaml

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: unreadable YAML ({exc}); fix or remove it") from exc
    return dict(doc) if isinstance(doc, Mapping) else None


def bench_run_config(bench: Mapping[str, Any], model: str, seed: int | None) -> dict[str, Any]:
    """One run of a bench as a `skyfuse train` config.yaml would describe it: the bench's document
    with ``model: {name, **fusion}`` and ``seed`` in place of the grid's ``models`` and ``seeds``
    (``out`` left out, as for a run's own config.yaml)
    (a probe trains no fusion network: its ``model`` is the name alone, without ``training``)."""
    doc = {k: v for k, v in bench.items() if k not in _BENCH_ONLY}
    fusion = doc.pop("fusion", None) or {}
    doc["kind"] = "train"
    doc.pop("out", None)
    doc["seed"] = seed
    if model.startswith("probe-"):
        doc["model"] = {"name": model}
        doc.pop("training", None)
    else:
        doc["model"] = {"name": model, **dict(fusion)}
    return doc


def _curves(
    run_dir: Path, metrics: Mapping[str, Any]
) -> tuple[list[dict[str, float]], int | None, list[dict[str, float]] | None]:
    """(rows, chosen epoch, refit rows): the logger's CSV files when present (``logs/metrics.csv``,
    ``logs/refit/metrics.csv``), else the histories in ``metrics.json``."""
    from skyfuse.reports.curves import read_metrics_csv, run_curves

    rows, chosen, refit = run_curves(metrics)
    log = run_dir / LOG_FILE
    logged = read_metrics_csv(log) if log.is_file() else []
    if logged:
        rows = logged
        if chosen is None or chosen < 0:
            chosen = int(rows[-1].get("epoch", len(rows) - 1))
        refit_log = run_dir / LOG_FILE.parent / "refit" / LOG_FILE.name
        if refit is not None and refit_log.is_file():
            refit = read_metrics_csv(refit_log) or refit
    clean = [{k: float(v) for k, v in r.items() if _is_number(v)} for r in rows]
    return clean, (chosen if clean else None), refit


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))


def group_runs(runs: Sequence[RunRecord]) -> list[RunGroup]:
    """Runs grouped by model name (`skyfuse evaluate` outputs apart), then by the settings that differ between runs of that model
    (seeds and other per-seed values apart; only settings every run of the model records count). Groups keep first-seen order; a model with one group
    is labelled by its name alone, otherwise by ``name (key=value, ...)`` over the keys that differ
    (each key by its shortest unambiguous tail, e.g. ``epochs`` for ``train_config.epochs``)."""
    by_model: dict[str, list[RunRecord]] = {}
    for r in runs:
        by_model.setdefault(_base_label(r), []).append(r)
    groups: list[RunGroup] = []
    for base, items in by_model.items():
        model = items[0].model
        keys = _varying_keys(items)
        parts: dict[tuple[str, ...], list[RunRecord]] = {}
        for r in items:
            sig = tuple(json.dumps(r.settings.get(k), sort_keys=True, default=str) for k in keys)
            parts.setdefault(sig, []).append(r)
        for members in parts.values():
            if len(parts) == 1:
                groups.append(RunGroup(base, model, members))
                continue
            values = {k: members[0].settings.get(k) for k in keys}
            names = short_keys(keys)
            label = f"{base} (" + ", ".join(f"{names[k]}={_value(v)}" for k, v in values.items())
            groups.append(RunGroup(label + ")", model, members, values))
    return groups


def _base_label(run: RunRecord) -> str:
    """The model name; a bundle scored by `skyfuse evaluate` is its own row, named by the part."""
    if run.kind == "evaluate":
        return f"{run.model} [evaluate: {run.settings.get('part') or 'test'}]"
    return run.model


def short_keys(keys: Sequence[str]) -> dict[str, str]:
    """Each dotted key by its shortest tail that no other key shares: ``train_config.epochs`` ->
    ``epochs`` unless another key also ends in ``epochs``."""
    out: dict[str, str] = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            tail = ".".join(parts[-n:])
            if not any(o != key and (o == tail or o.endswith("." + tail)) for o in keys):
                break
        out[key] = tail
    return out


def _varying_keys(runs: Sequence[RunRecord]) -> list[str]:
    keys: list[str] = []
    for key in sorted({k for r in runs for k in r.settings}):
        if _PER_SEED.search(key) or any(key not in r.settings for r in runs):
            continue  # a setting only some runs record does not tell them apart
        values = {json.dumps(r.settings.get(key), sort_keys=True, default=str) for r in runs}
        if len(values) > 1:
            keys.append(key)
    return keys


def _value(v: Any) -> str:
    text = v if isinstance(v, str) else json.dumps(v, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def run_differences(runs: Sequence[RunRecord]) -> list[dict[str, tuple[Any, Any]]]:
    """For each run, its settings that differ from the first run's (the first gets ``{}``)."""
    if not runs:
        return []
    ref = runs[0].settings
    return [{} if i == 0 else config_diff(ref, r.settings) for i, r in enumerate(runs)]
