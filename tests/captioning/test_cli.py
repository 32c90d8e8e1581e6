from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from skyfuse.captioning.store import read_records
from skyfuse.captioning.stub import StubVLMServer, always
from skyfuse.cli import app
from tests.captioning.helpers import make_folder

runner = CliRunner()


def text(r) -> str:  # type: ignore[no-untyped-def]
    return " ".join(r.output.split())


def test_caption_attributes_exit_status_and_resume(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "scenes", per_class=2)
    out = tmp_path / "c.jsonl"
    r = runner.invoke(app, ["caption", str(root), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "4 captioned" in text(r) and "attribute captioner" in text(r)
    (root / "Alpha" / "zz.png").write_bytes(b"broken")
    r = runner.invoke(app, ["caption", str(root), "--out", str(out), "--backend", "attributes"])
    assert r.exit_code == 1 and "4 already done" in text(r) and "1 failed" in text(r)


def test_caption_openai_shards_and_merge(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "scenes", per_class=3)
    with StubVLMServer() as srv:
        for i in range(2):
            r = runner.invoke(
                app,
                [
                    "caption",
                    str(root),
                    "--backend",
                    "openai",
                    "--base-url",
                    srv.url,
                    "--model",
                    "stub",
                    "--out",
                    str(tmp_path / f"s{i}.jsonl"),
                    "--concurrency",
                    "4",
                    "--shard",
                    f"{i}/2",
                ],
            )
            assert r.exit_code == 0, r.output
    r = runner.invoke(
        app,
        [
            "captions",
            "merge",
            str(tmp_path / "s0.jsonl"),
            str(tmp_path / "s1.jsonl"),
            "--out",
            str(tmp_path / "all.jsonl"),
        ],
    )
    assert r.exit_code == 0 and "0 conflicts" in text(r)
    recs = read_records(tmp_path / "all.jsonl")
    assert len(recs) == 6 and {r["backend"] for r in recs} == {"openai"}


def test_caption_unknown_model_is_one_line(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "scenes", per_class=1)
    with StubVLMServer(faults=always("404")) as srv:
        r = runner.invoke(
            app,
            [
                "caption",
                str(root),
                "--base-url",
                srv.url,
                "--model",
                "nope",
                "--out",
                str(tmp_path / "c.jsonl"),
            ],
        )
    assert r.exit_code == 2
    assert "error:" in text(r) and "--model" in text(r) and "Traceback" not in r.output


def test_audit_and_mask(tmp_path: Path) -> None:
    caps = tmp_path / "caps.jsonl"
    rows = [
        ("Beach/a.jpg", "Sand. Overall, this scene can be classified as a beach."),
        ("Beach/b.jpg", "Waves on sand."),
        ("Forest/a.jpg", "Dense trees in a forest."),
    ]
    caps.write_text("".join(json.dumps({"path": p, "caption": c}) + "\n" for p, c in rows))
    r = runner.invoke(
        app,
        [
            "captions",
            "audit",
            str(caps),
            "--mask",
            str(tmp_path / "m.jsonl"),
            "--json",
            str(tmp_path / "a.json"),
        ],
    )
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "a.json").read_text())
    assert report["per_class"]["Beach"]["self_named"] == 1 and report["verdict_captions"] == 1
    masked = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert masked[0]["caption"] == "Sand." and "[MASK]" in masked[2]["caption"]


def test_prompts_listed() -> None:
    r = runner.invoke(app, ["captions", "prompts"])
    assert r.exit_code == 0 and "ground" in text(r) and "paper" in text(r)


def test_status_counts_missing_and_failed(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "scenes", per_class=2)
    out = tmp_path / "c.jsonl"
    runner.invoke(
        app, ["caption", str(root), "--out", str(out), "--limit", "3", "-b", "attributes"]
    )
    r = runner.invoke(app, ["captions", "status", str(out), "--dataset", str(root)])
    assert r.exit_code == 1 and "3 of 4 images have a caption" in text(r)
    runner.invoke(app, ["caption", str(root), "--out", str(out), "-b", "attributes"])
    r = runner.invoke(app, ["captions", "status", str(out), "--dataset", str(root)])
    assert r.exit_code == 0 and "4 captions: attributes / attributes-v1 / prompt none" in text(r)


def test_status_refuses_a_file_that_is_not_a_store(tmp_path: Path) -> None:
    other = tmp_path / "pairs.jsonl"
    other.write_text('{"path": "a.jpg", "caption": "sand"}\n')
    r = runner.invoke(app, ["captions", "status", str(other)])
    assert r.exit_code == 2 and "not a caption store" in text(r) and "Traceback" not in r.output
