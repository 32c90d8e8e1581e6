"""`friendly_errors`: OS errors on user-given paths become one line and exit status 2, never a traceback."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from skyfuse.cli import app
from skyfuse.cli.common import friendly_errors
from skyfuse.data.synthetic import make_synthetic_dataset

runner = CliRunner()


def _app_raising(exc: BaseException) -> typer.Typer:
    mini = typer.Typer()

    @mini.command()
    @friendly_errors
    def boom() -> None:
        raise exc

    return mini


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        (IsADirectoryError(errno.EISDIR, "Is a directory", "out/dir"), "is a folder"),
        (NotADirectoryError(errno.ENOTDIR, "Not a directory", "a.txt/x"), "is a file"),
        (FileExistsError(errno.EEXIST, "File exists", "a.txt"), "already exists"),
        (OSError(errno.ENOSPC, "No space left on device", "big.bin"), "No space left"),
        (FileNotFoundError(errno.ENOENT, "No such file", "gone.jpg"), "not found"),
    ],
)
def test_os_errors_are_one_line(exc: OSError, words: str) -> None:
    r = runner.invoke(_app_raising(exc), [])
    assert r.exit_code == 2, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and exc.filename in lines[0] and words in lines[0]


def test_os_error_without_a_file_is_not_hidden() -> None:
    r = runner.invoke(_app_raising(OSError("socket trouble")), [])
    assert r.exit_code != 0 and isinstance(r.exception, OSError)


def test_caption_out_is_a_folder(tmp_path: Path) -> None:
    """Regression: `skyfuse caption DIR -o EXISTING_FOLDER` printed an IsADirectoryError traceback."""
    scenes = make_synthetic_dataset(
        tmp_path / "s", per_class=1, size=32, classes=["beach", "forest"]
    )
    (tmp_path / "outdir").mkdir()
    r = runner.invoke(
        app, ["caption", str(scenes), "--backend", "attributes", "-o", str(tmp_path / "outdir")]
    )
    assert r.exit_code == 2, r.output
    assert "outdir" in r.output and "is a folder" in r.output and "Traceback" not in r.output


def test_messages_are_not_wrapped_when_piped(tmp_path: Path) -> None:
    """Regression: piped output (CI logs, `| tee`) broke summary lines at 80 columns mid-sentence."""
    scenes = make_synthetic_dataset(
        tmp_path / "a-folder-name-long-enough-to-push-the-line-past-eighty-columns",
        per_class=4,
        size=32,
        classes=["beach", "forest"],
    )
    out = tmp_path / "split.json"
    r = runner.invoke(app, ["split", str(scenes), "--train", "0.5", "-o", str(out)])
    assert r.exit_code == 0, r.output
    line = next(x for x in r.output.splitlines() if x.startswith("wrote"))
    assert str(out) in line and line.rstrip().endswith("seed 0)")


def test_quiet_turns_every_bar_off(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """--quiet wins over SKYFUSE_PROGRESS=1 (which forces bars in logs), for the CLI's own bars and
    for the bars library jobs get through skyfuse.progress."""
    from skyfuse.cli import common
    from skyfuse.progress import resolve_progress

    monkeypatch.setenv("SKYFUSE_PROGRESS", "1")
    monkeypatch.setattr(common, "_QUIET", False)
    assert not common.progress().disable
    common.set_quiet(True)
    try:
        assert common.progress().disable and resolve_progress(True).disable  # type: ignore[attr-defined]
    finally:
        common.set_quiet(False)
    data = make_synthetic_dataset(tmp_path / "d", per_class=2, size=16, classes=["beach", "forest"])
    assert CliRunner().invoke(app, ["datasets", "check", str(data), "--quiet"]).exit_code == 0
    assert common._QUIET  # the flag reached the switch
    common.set_quiet(False)
