"""From a command line to an experiment: the flags a user typed become dotted config keys.

Why only typed flags: with ``--config FILE`` a flag left at its default must not undo the file; without
a file the schema's defaults (equal to the flags' shown defaults, checked in tests/cli) fill the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

if TYPE_CHECKING:  # the schema imports torch (zeroshot settings): not at `skyfuse --help` time
    from skyfuse.experiments.config import Experiment

E = TypeVar("E", bound="Experiment")

Convert = Callable[[Any], Any]


def typed_flags(ctx: typer.Context) -> set[str]:
    """Parameters set on the command line or from the environment (not left at their default)."""
    given = {"COMMANDLINE", "ENVIRONMENT"}  # by name: Typer may carry its own copy of click's enum
    return {
        p.name
        for p in ctx.command.params
        if p.name and getattr(ctx.get_parameter_source(p.name), "name", None) in given
    }


def flag_label(ctx: typer.Context, name: str) -> str:
    """How the user spells a parameter: its longest option name, or the argument's metavar."""
    for param in ctx.command.params:
        if param.name == name:
            opts = [o for o in param.opts if o.startswith("--")]
            return max(opts, key=len) if opts else name.upper()
    return name


def experiment_from_flags(
    ctx: typer.Context,
    kind: type[E],
    values: Mapping[str, Any],
    keys: Mapping[str, str],
    *,
    config_file: Path | None,
    convert: Mapping[str, Convert] | None = None,
) -> E:
    """The experiment of ``config_file`` with every typed flag (``keys``: parameter -> dotted key)
    laid over it; an invalid value set by a flag is reported under the flag's name."""
    from skyfuse.experiments.config import build_experiment

    convert = convert or {}
    overrides: dict[str, Any] = {}
    labels: dict[str, str] = {}
    for name in typed_flags(ctx) & set(keys):
        value = values[name]
        overrides[keys[name]] = convert[name](value) if name in convert else value
        labels[keys[name]] = flag_label(ctx, name)
    return build_experiment(kind, config_file=config_file, overrides=overrides, labels=labels)


def parse_seeds(text: str) -> list[int]:
    """``--seeds 0,1,2`` as a list, or a one-line error."""
    from skyfuse.errors import ConfigError

    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(
            f"--seeds {text!r}: give integers separated by commas, e.g. 0,1,2"
        ) from None
    if not seeds:
        raise ConfigError("--seeds is empty; give e.g. 0,1,2")
    return seeds
