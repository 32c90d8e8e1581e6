"""Options shared by several commands are declared once (`skyfuse.cli.options`) and look the same everywhere.

A command that re-declares one of them locally (other help, default, flags or checks) fails here.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

import pytest
import typer

from skyfuse.cli import app, features, options, train, zeroshot

COMMANDS: dict[str, Callable[..., Any]] = {
    "train": train.train,
    "bench": train.bench,
    "evaluate": train.evaluate,
    "features": features.features,
    "zeroshot": zeroshot.zeroshot,
}

FOUR = ("train", "bench", "features", "zeroshot")
TRAIN_BENCH = ("train", "bench")
EXPERIMENTS = ("train", "bench", "zeroshot")

#: parameter name -> (alias, default every command must show, commands that use it)
SHARED: dict[str, tuple[Any, Any, tuple[str, ...]]] = {
    "path": (options.ExperimentPathArg, None, EXPERIMENTS),
    "config": (options.ConfigOpt, None, EXPERIMENTS),
    "quiet": (options.QuietOpt, False, EXPERIMENTS),
    "logger": (options.LoggerOpt, "csv", TRAIN_BENCH),
    "captions": (options.CaptionsOpt, None, FOUR),
    "image_encoder": (options.ImageEncoderOpt, "efficientnet-lite0", FOUR),
    "text_encoder": (options.TextEncoderOpt, "minilm", FOUR),
    "cache_dir": (options.CacheDirOpt, None, (*FOUR, "evaluate")),
    "model": (options.ModelOpt, "dual", ("train", "zeroshot")),
    "seed": (options.SeedOpt, 0, ("train", "zeroshot")),
    "protocol": (options.ProtocolOpt, None, TRAIN_BENCH),
    "train_ratio": (options.TrainRatioOpt, None, TRAIN_BENCH),
    "val": (options.ValOpt, 0.1, TRAIN_BENCH),
    "epochs": (options.EpochsOpt, 30, TRAIN_BENCH),
    "lr": (options.LrOpt, 1e-3, TRAIN_BENCH),
    "batch_size": (options.BatchSizeOpt, 64, TRAIN_BENCH),
    "patience": (options.PatienceOpt, 10, TRAIN_BENCH),
    "refit": (options.RefitOpt, False, TRAIN_BENCH),
    "width": (options.WidthOpt, 128, TRAIN_BENCH),
    "heads": (options.HeadsOpt, 4, TRAIN_BENCH),
    "levels": (options.LevelsOpt, 2, TRAIN_BENCH),
    "dropout": (options.DropoutOpt, 0.1, TRAIN_BENCH),
    "shortcut": (options.ShortcutOpt, True, TRAIN_BENCH),
    "token_drop": (options.TokenDropOpt, 0.0, TRAIN_BENCH),
    "views": (options.ViewsOpt, 8, TRAIN_BENCH),
    "selection": (options.SelectionOpt, "fixed", TRAIN_BENCH),
    "linear_path": (options.LinearPathOpt, True, TRAIN_BENCH),
    "caption_dropout": (options.CaptionDropoutOpt, 0.0, TRAIN_BENCH),
}

#: what a user sees of a parameter, besides its position in --help
FACETS = ("opts", "secondary_opts", "help", "default", "required", "is_flag", "min", "max")


def _param(command: str, name: str) -> Any:
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    matches = [p for p in group.commands[command].params if p.name == name]
    assert len(matches) == 1, f"`skyfuse {command}` has no parameter {name!r}"
    return matches[0]


def _facets(param: Any) -> dict[str, Any]:
    return {f: getattr(param, f, None) for f in FACETS}


@pytest.mark.parametrize("name", sorted(SHARED))
def test_shared_option_uses_the_one_declaration(name: str) -> None:
    alias, _, commands = SHARED[name]
    (declared,) = alias.__metadata__
    for command in commands:
        hints = typing.get_type_hints(inspect.unwrap(COMMANDS[command]), include_extras=True)
        metadata = getattr(hints[name], "__metadata__", ())
        assert declared in metadata, (
            f"`skyfuse {command}` declares {name!r} itself; use skyfuse.cli.options"
        )


@pytest.mark.parametrize("name", sorted(SHARED))
def test_shared_option_looks_the_same_in_every_command(name: str) -> None:
    _, default, commands = SHARED[name]
    seen = {command: _facets(_param(command, name)) for command in commands}
    first = seen[commands[0]]
    assert first["help"], f"{name}: no help text"
    assert first["default"] == default
    for command, facets in seen.items():
        assert facets == first, f"{name}: `skyfuse {command}` differs from `skyfuse {commands[0]}`"


def test_contract_flags() -> None:
    """The flags scripts rely on (README, bench/, interface contracts) keep their names and short forms."""
    assert _param("train", "captions").opts == ["--captions", "-c"]
    assert _param("bench", "protocol").opts == ["--protocol", "-p"]
    assert _param("train", "model").opts == ["--model", "-m"]
    assert _param("train", "train_ratio").opts == ["--train"]
    assert _param("bench", "shortcut").secondary_opts == ["--no-shortcut"]
    assert _param("bench", "seeds").opts == ["--seeds"]
    assert _param("bench", "seeds").default == "0,1,2"
    assert _param("train", "out").opts == ["--out", "-o"]
    assert _param("train", "config").opts == ["--config"]
    # features has no config file: its folder stays a required argument
    assert _param("features", "path").required


def test_a_drifting_copy_is_caught() -> None:
    """The facet comparison above sees a locally re-declared option with other help."""
    mini = typer.Typer()

    @mini.command("a")
    def a(cache_dir: options.CacheDirOpt = None) -> None:  # pragma: no cover - never run
        pass

    @mini.command("b")
    def b(
        cache_dir: str | None = typer.Option(None, "--cache-dir", help="Feature cache."),
    ) -> None:  # pragma: no cover - never run
        pass

    group = typer.main.get_command(mini)
    assert isinstance(group, typer.core.TyperGroup)
    facets = [_facets(group.commands[c].params[0]) for c in ("a", "b")]
    assert facets[0]["opts"] == facets[1]["opts"]
    assert facets[0] != facets[1]
