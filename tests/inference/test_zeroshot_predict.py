"""Zero-shot bundles behind the predictor interface: any class names, CLI `--classes`, the service."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from skyfuse.cli import app
from skyfuse.errors import BadInputError, ConfigError
from skyfuse.inference import Predictor, ZeroShotPredictor, load_predictor, parse_classes
from skyfuse.serving import create_app
from tests.inference.helpers import CLASSES, encoders, make_zeroshot_bundle, png_bytes, random_image


@pytest.fixture(scope="module")
def zs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_zeroshot_bundle(tmp_path_factory.mktemp("zs") / "model")


def test_parse_classes() -> None:
    assert parse_classes(" port, golf course ,, solar farm ") == [
        "port",
        "golf course",
        "solar farm",
    ]
    assert parse_classes("  ") is None
    with pytest.raises(BadInputError, match="twice"):
        parse_classes("a,b,a")


def test_zeroshot_predictor_scores_new_names(zs_dir: Path) -> None:
    ie, te = encoders()
    new = ["harbour", "golf course", "airport"]
    p = load_predictor(zs_dir, classes=new, image_encoder=ie, text_encoder=te)
    assert isinstance(p, ZeroShotPredictor) and p.class_names == new
    preds = p.predict([random_image(seed=1), random_image(seed=2)], ["boats", "grass"], top_k=2)
    for pred in preds:
        assert len(pred.top_k) == 2 and {t.label for t in pred.top_k} <= set(new)
        assert pred.top_k[0].prob >= pred.top_k[1].prob
    default = load_predictor(zs_dir, image_encoder=ie, text_encoder=te)
    assert default.class_names == CLASSES
    generated = default.predict([random_image(seed=3)], None, top_k=1)[0]
    assert generated.caption  # captioned on the fly
    with pytest.raises(ConfigError, match="zero-shot bundle"):
        Predictor(zs_dir, image_encoder=ie, text_encoder=te)


def test_zeroshot_cli_and_service(tmp_path: Path, zs_dir: Path) -> None:
    img = tmp_path / "x.png"
    random_image(40, seed=4).save(img)
    out = tmp_path / "zs.jsonl"
    r = CliRunner().invoke(
        app,
        ["predict", str(zs_dir), str(img), "--out", str(out), "--classes", "port,meadow,desert"],
    )
    assert r.exit_code == 0, r.output
    rec = json.loads(out.read_text().splitlines()[0])
    assert {t["label"] for t in rec["top_k"]} == {"port", "meadow", "desert"}
    ie, te = encoders()
    service = create_app(
        load_predictor(zs_dir, classes=["a b", "c"], image_encoder=ie, text_encoder=te)
    )
    with TestClient(service) as c:
        assert c.get("/classes").json() == {"classes": ["a b", "c"]}
        body = c.post(
            "/predict",
            files={"image": ("x.png", png_bytes(random_image(40)), "image/png")},
            data={"explain": "true"},
        ).json()
        assert {t["label"] for t in body["top_k"]} == {"a b", "c"}
        assert body["attention_overlay"] is None  # zero-shot heads give no attention maps
