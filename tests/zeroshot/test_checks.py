"""Bad --out / --model / fusion settings fail at once, before any feature extraction (QA regressions)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NoReturn

import pytest
from typer.testing import CliRunner

from skyfuse.cli import app
from skyfuse.errors import BadInputError, ConfigError
from skyfuse.models import list_models
from skyfuse.zeroshot.checks import check_fusion_settings, check_out_dir, fusion_config
from skyfuse.zeroshot.protocol import ZeroShotSettings, run_zeroshot


@pytest.fixture()
def no_extraction(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any encoder creation or feature extraction fail loudly."""
    import skyfuse.encoders as enc

    def boom(*_a: Any, **_k: Any) -> NoReturn:
        raise AssertionError("expensive work started before the settings were checked")

    for name in ("create_image_encoder", "create_text_encoder", "extract_features"):
        monkeypatch.setattr(enc, name, boom)


@pytest.fixture()
def scenes(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "scenes"
    rows = []
    for cls in ("beach", "forest", "water"):
        (root / cls).mkdir(parents=True)
        for i in range(2):
            (root / cls / f"{i}.png").write_bytes(b"not decoded by these tests")
            rows.append({"path": f"{cls}/{i}.png", "caption": f"a {cls}"})
    caps = tmp_path / "caps.jsonl"
    caps.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root, caps


def test_unknown_model_is_one_short_line() -> None:
    with pytest.raises(ConfigError) as err:
        check_fusion_settings("nope", {})
    msg = str(err.value)
    assert msg == f"--model nope: unknown; use one of {', '.join(list_models())}"
    assert "dual" in msg and "\n" not in msg


def test_bad_fusion_field_is_not_nested() -> None:
    with pytest.raises(ConfigError) as err:
        check_fusion_settings("dual", {"width": 10})
    msg = str(err.value)
    assert "not divisible by heads" in msg and msg.count("invalid fusion config") == 1
    check_fusion_settings("concat", {"width": 16, "heads": 2})
    assert fusion_config({"model": "dual", "image_dim": 3, "text_dim": 5, "num_classes": 5}).width


def test_out_dir_checks(tmp_path: Path) -> None:
    afile = tmp_path / "afile.txt"
    afile.write_text("x")
    with pytest.raises(BadInputError, match=r"afile\.txt: is a file"):
        check_out_dir(afile)
    with pytest.raises(BadInputError, match=r"afile\.txt: is a file"):
        check_out_dir(afile / "sub")
    made = check_out_dir(tmp_path / "a" / "b")
    assert made.is_dir()


def test_run_zeroshot_checks_before_extraction(
    scenes: tuple[Path, Path], tmp_path: Path, no_extraction: None
) -> None:
    root, _ = scenes
    caps = {f"{c}/{i}.png": f"a {c}" for c in ("beach", "forest", "water") for i in range(2)}
    with pytest.raises(ConfigError, match="--model nope: unknown"):
        run_zeroshot(root, caps, tmp_path / "out", ZeroShotSettings(model="nope"))
    assert not (tmp_path / "out").exists()
    afile = tmp_path / "afile.txt"
    afile.write_text("x")
    with pytest.raises(BadInputError, match="is a file"):
        run_zeroshot(root, caps, afile, ZeroShotSettings())


@pytest.mark.parametrize(
    ("extra", "expect"),
    [
        (["--model", "nope"], "--model nope: unknown; use one of"),
        (["--width", "10"], "not divisible by heads"),
    ],
)
def test_cli_bad_settings_fail_before_features(
    scenes: tuple[Path, Path], tmp_path: Path, no_extraction: None, extra: list[str], expect: str
) -> None:
    root, caps = scenes
    out = tmp_path / "out"
    args = [
        "zeroshot",
        str(root),
        "-c",
        str(caps),
        "-o",
        str(out),
        "--cache-dir",
        str(tmp_path / "c"),
    ]
    result = CliRunner().invoke(app, args + extra)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert expect in text and "Traceback" not in result.output
    assert text.count("invalid fusion config") <= 1  # no nested pydantic summary
    assert not out.exists() and not (tmp_path / "c").exists()


def test_cli_out_is_a_file_fails_before_features(
    scenes: tuple[Path, Path], tmp_path: Path, no_extraction: None
) -> None:
    root, caps = scenes
    afile = tmp_path / "afile.txt"
    afile.write_text("keep me")
    result = CliRunner().invoke(app, ["zeroshot", str(root), "-c", str(caps), "-o", str(afile)])
    assert result.exit_code == 2, result.output
    assert "afile.txt: is a file" in " ".join(result.output.split())
    assert afile.read_text() == "keep me"


def test_cli_help_names_the_real_requirements() -> None:
    result = CliRunner().invoke(app, ["zeroshot", "--help"], env={"COLUMNS": "200"})
    text = " ".join(result.output.replace("│", " ").split())
    assert "skyfuse[openclip]" in text and "(needs skyfuse)" not in text
    assert "~/.cache/skyfuse/features" in text
