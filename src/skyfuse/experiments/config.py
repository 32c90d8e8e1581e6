"""Experiment configs: every setting of a `train`, `bench` or `zeroshot` run as one checked document.

Why: researchers run grids of encoders x captions x models x protocols x seeds. A run folder's
``config.yaml`` says exactly how to rerun it (``skyfuse train --config RUN/config.yaml --out NEW``),
a config file is the readable way to write an experiment down, and command-line flags given beside a
file override it. Every document is checked before any work starts: an unknown key or a wrong type is
one line naming the file and the dotted key.

The ``recorded`` section is written, never required: what the run saw (package version, captions and
split digests, encoder ids, time). A rerun compares it with what it sees and warns on a difference.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from skyfuse.errors import ConfigError
from skyfuse.training.config import TrainConfig
from skyfuse.zeroshot.aligned import AlignConfig

CONFIG_FILE = "config.yaml"

Kind = Literal["train", "bench", "zeroshot"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSection(Section):
    """The scene folder, its captions and how it is split."""

    path: Path | None = Field(default=None, description="scene folder (class sub-folders)")
    captions: Path | None = Field(
        default=None, description="captions file or text tree; default: the folder's text/ tree"
    )
    protocol: str | None = Field(
        default=None, description="a named protocol, e.g. aid-20 or whu-60"
    )
    train_ratio: float | None = Field(
        default=None, gt=0, lt=1, description="train fraction per class"
    )
    split: Path | None = Field(default=None, description="a saved split JSON instead of a protocol")
    val: float = Field(
        default=0.1, ge=0, lt=1, description="share of the training part held out as val"
    )


class EncoderSection(Section):
    image: str = "efficientnet-lite0"
    text: str = "minilm"
    cache_dir: Path | None = Field(
        default=None, description="feature cache (default: the user cache)"
    )


class FusionSection(Section):
    """The fusion network's shape (`skyfuse.models.FusionConfig` takes these)."""

    width: int = Field(default=128, ge=8)
    heads: int = Field(default=4, ge=1)
    levels: int = Field(default=2, ge=1)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    token_drop: float = Field(default=0.0, ge=0, lt=1)
    caption_dropout: float = Field(default=0.0, ge=0, le=1)
    shortcut: bool = True
    linear_path: bool = True
    shared_weights: bool = False


class ModelSection(FusionSection):
    name: str = Field(default="dual", description="fusion model: dual, image, text, concat, ...")


class Recorded(Section):
    """What a finished config described when it ran (informational; compared on a rerun)."""

    version: str | None = None
    written: str | None = None
    captions_digest: str | None = None
    split_digest: str | None = None
    image_encoder_id: str | None = None
    text_encoder_id: str | None = None
    caption_source: dict[str, Any] | None = None


class Experiment(Section):
    """Fields every experiment has; ``kind`` names the command a document belongs to."""

    kind: Kind
    out: Path | None = Field(default=None, description="output folder")
    recorded: Recorded | None = None


class TrainExperiment(Experiment):
    """`skyfuse train`: one model, one seed, one split."""

    kind: Literal["train"] = "train"
    seed: int = Field(default=0, description="seeds the split and the training")
    data: DataSection = Field(default_factory=lambda: DataSection())
    encoders: EncoderSection = Field(default_factory=lambda: EncoderSection())
    model: ModelSection = Field(default_factory=lambda: ModelSection())
    training: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="after")
    def _one_seed(self) -> TrainExperiment:
        return _sync_seed(self, self.seed)


class BenchExperiment(Experiment):
    """`skyfuse bench`: several models over several seeded splits, plus probes."""

    kind: Literal["bench"] = "bench"
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    models: list[str] = Field(
        default_factory=lambda: ["dual", "image", "text", "concat"], min_length=1
    )
    probes: bool = True
    save_models: bool = False
    data: DataSection = Field(default_factory=lambda: DataSection())
    encoders: EncoderSection = Field(default_factory=lambda: EncoderSection())
    fusion: FusionSection = Field(default_factory=lambda: FusionSection())
    training: TrainConfig = Field(default_factory=TrainConfig)


class ZeroShotData(Section):
    path: Path | None = None
    captions: Path | None = None
    descriptions: Path | None = Field(
        default=None,
        description="class file (name, phrase, descriptions) overriding the shipped ones",
    )


class ZeroShotEncoders(EncoderSection):
    clip: str | None = Field(
        default=None, description="also score CLIP: openclip:<arch>@<checkpoint>"
    )


class ZeroShotProtocol(Section):
    unseen: float = Field(default=0.25, gt=0, lt=1, description="share of classes unseen per fold")
    folds: int = Field(default=3, ge=1)
    mask: Literal["raw", "masked", "both"] = "both"


class ZeroShotModel(Section):
    name: str = "dual"
    width: int = Field(default=256, ge=8)
    image_grid: int | None = Field(default=None, ge=1)
    fusion_head: bool = False


class ZeroShotHeadTraining(Section):
    """The optional fusion semantic head's optimisation (the aligned method uses ``align``)."""

    epochs: int = Field(default=30, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    batch_size: int = Field(default=64, ge=1)


class ZeroShotOutputs(Section):
    fold_models: bool = False
    final_model: bool = True


class ZeroShotExperiment(Experiment):
    """`skyfuse zeroshot`: the unseen-class protocol."""

    kind: Literal["zeroshot"] = "zeroshot"
    seed: int = 0
    data: ZeroShotData = Field(default_factory=lambda: ZeroShotData())
    encoders: ZeroShotEncoders = Field(default_factory=lambda: ZeroShotEncoders())
    protocol: ZeroShotProtocol = Field(default_factory=lambda: ZeroShotProtocol())
    model: ZeroShotModel = Field(default_factory=lambda: ZeroShotModel())
    training: ZeroShotHeadTraining = Field(default_factory=lambda: ZeroShotHeadTraining())
    align: AlignConfig = Field(default_factory=AlignConfig)
    outputs: ZeroShotOutputs = Field(default_factory=ZeroShotOutputs)


def _sync_seed(exp: Any, seed: int) -> Any:
    """The top-level seed is the run's one seed; a different ``training.seed`` is a mistake."""
    if "seed" in exp.training.model_fields_set and exp.training.seed != seed:
        raise ValueError(
            f"training.seed {exp.training.seed} differs from seed {seed}; set only the top-level seed"
        )
    exp.training.seed = seed
    return exp


E = TypeVar("E", bound=Experiment)

KINDS: dict[str, type[Experiment]] = {
    "train": TrainExperiment,
    "bench": BenchExperiment,
    "zeroshot": ZeroShotExperiment,
}


def read_document(path: Path) -> dict[str, Any]:
    """A YAML (or JSON) mapping from ``path``, or a one-line `ConfigError` naming the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}:{where} not valid YAML ({problem}); fix the file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: a config is a YAML mapping of sections, not a {type(data).__name__}"
        )
    return data


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` laid over it, section by section (override wins on leaves)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"training.lr": 0.1}`` -> ``{"training": {"lr": 0.1}}``."""
    out: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = out
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _problem(error: Mapping[str, Any], labels: Mapping[str, str]) -> str:
    key = ".".join(str(p) for p in error["loc"]) or "config"
    key = labels.get(key, key)
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    return f"{key}: {error['msg']}"


def build_experiment(
    kind: type[E],
    *,
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    labels: Mapping[str, str] | None = None,
) -> E:
    """The experiment of ``config_file`` (if any) with ``overrides`` (dotted keys) laid over it.

    The document is checked as a whole: unknown keys, wrong types and out-of-range values become one
    line naming the file and each dotted key (or its ``labels`` entry, e.g. the flag that set it); a
    document of another command names that command.
    """
    document = read_document(config_file) if config_file is not None else {}
    expected = kind.model_fields["kind"].default
    found = document.get("kind", expected)
    if found != expected:
        raise ConfigError(
            f"{config_file}: a {found} config (kind: {found}); use it with `skyfuse {found} --config`"
        )
    data = merge(document, nest(overrides or {}))
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        where = f"{config_file}: " if config_file is not None else ""
        problems = "; ".join(_problem(e, labels or {}) for e in exc.errors())
        raise ConfigError(f"{where}{problems}") from None


def absolute_paths(exp: E) -> E:
    """``exp`` with every path of its sections made absolute, so its config.yaml reruns from anywhere."""
    update: dict[str, Any] = {}
    for name in type(exp).model_fields:
        section = getattr(exp, name)
        if isinstance(section, Path):
            update[name] = section.expanduser().resolve()
        elif isinstance(section, Section):
            paths = {
                k: v.expanduser().resolve()
                for k, v in section.__dict__.items()
                if isinstance(v, Path)
            }
            if paths:
                update[name] = section.model_copy(update=paths)
    return exp.model_copy(update=update)


def to_document(exp: Experiment) -> dict[str, Any]:
    """The experiment as a plain mapping (paths as strings), in the schema's order."""
    data = exp.model_dump(mode="json", exclude_none=False)
    if isinstance(exp, TrainExperiment | BenchExperiment):
        data["training"].pop("seed", None)  # the top-level seed (bench: one per run)
    recorded = data.pop("recorded", None)
    if recorded is not None:  # last: what the run saw, after what it was asked to do
        data["recorded"] = recorded
    if isinstance(data.get("model"), dict) and "name" in data["model"]:  # the name first
        data["model"] = {"name": data["model"].pop("name"), **data["model"]}
    return data


def save_experiment(exp: Experiment, path: Path) -> Path:
    """Write ``exp`` as YAML, atomically (a kill leaves the old file or the new one)."""
    from skyfuse.reports.tables import write_atomic

    header = (
        f"# skyfuse {exp.kind} config: rerun with `skyfuse {exp.kind} --config {path.name}`"
        " (flags given beside it override it)\n"
    )
    body = yaml.safe_dump(to_document(exp), sort_keys=False, allow_unicode=True)
    write_atomic(path, header + body)
    return path


def save_run_config(exp: Experiment, out: Path, seen: Recorded) -> Path:
    """``OUT/config.yaml`` of a finished run: ``exp`` with what the run saw as its ``recorded``
    section, stamped with the skyfuse version and the time."""
    import datetime as dt

    import skyfuse

    stamp = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    recorded = seen.model_copy(update={"version": skyfuse.__version__, "written": stamp})
    return save_experiment(exp.model_copy(update={"recorded": recorded}), out / CONFIG_FILE)


def recorded_differences(exp: Experiment, seen: Recorded) -> list[str]:
    """What a rerun sees differently from what its config recorded (digests and encoder ids)."""
    if exp.recorded is None:
        return []
    out = []
    for key in ("captions_digest", "split_digest", "image_encoder_id", "text_encoder_id"):
        was, now = getattr(exp.recorded, key), getattr(seen, key)
        if was is not None and now is not None and was != now:
            out.append(f"{key} {str(was)[:12]} -> {str(now)[:12]}")
    return out
