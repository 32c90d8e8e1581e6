from typer.testing import CliRunner

import skyfuse
from skyfuse.cli import app


def test_version_and_help() -> None:
    assert skyfuse.__version__
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "skyfuse" in result.output.lower() or "usage" in result.output.lower()
