"""Caption provenance: what training records about its captions, and when two sources agree."""

from __future__ import annotations

import json
from pathlib import Path

from skyfuse.captioning.attributes import VERSION
from skyfuse.captioning.prompts import resolve_prompt
from skyfuse.captioning.provenance import (
    CaptionSource,
    same_kind,
    source_of_captioner,
    source_of_file,
)
from skyfuse.captioning.store import make_record


def _store(path: Path, *recs: dict) -> Path:  # type: ignore[type-arg]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    return path


def _rec(rel: str, backend: str, model: str, prompt: str = "ground", **kw: object) -> dict:  # type: ignore[type-arg]
    p = resolve_prompt(prompt) if prompt != "none" else None
    return make_record(
        rel=rel,
        sha256="0" * 64,
        caption=f"caption of {rel}",
        backend=backend,
        model=model,
        prompt_id=p.id if p else "none",
        prompt_hash=p.hash if p else "",
        params=dict(kw.pop("params", {})),  # type: ignore[call-overload]
        is_vlm=backend in {"openai", "transformers"},
        latency_s=0.1,
    )


def test_vlm_store_records_backend_model_and_prompt_text(tmp_path: Path) -> None:
    path = _store(
        tmp_path / "c.jsonl", _rec("A/a.jpg", "openai", "qwen"), _rec("B/b.jpg", "openai", "qwen")
    )
    src = source_of_file(path)
    ground = resolve_prompt("ground")
    assert (src.kind, src.backend, src.model, src.prompt_id) == (
        "captioner",
        "openai",
        "qwen",
        "ground",
    )
    assert src.prompt_text == ground.text and src.prompt_hash == ground.hash
    assert src.id == "openai:qwen:ground" and src.regenerable
    assert CaptionSource.from_dict(json.loads(json.dumps(src.to_dict()))) == src


def test_attribute_store_records_the_captioner_version(tmp_path: Path) -> None:
    path = _store(tmp_path / "c.jsonl", _rec("A/a.jpg", "attributes", VERSION, "none"))
    src = source_of_file(path)
    assert src.kind == "captioner" and src.attributes_version == VERSION
    assert src.id == f"attributes:{VERSION}"


def test_human_caption_files_are_files_kind(tmp_path: Path) -> None:
    csv = tmp_path / "rsicd.csv"
    csv.write_text("path,caption\nA/a.jpg,many boats in a harbour\n", encoding="utf-8")
    src = source_of_file(csv)
    assert src.kind == "files" and not src.regenerable and "rsicd.csv" in src.describe()
    imported = _store(
        tmp_path / "imp.jsonl",
        _rec("A/a.jpg", "files", "files:rsicd.json", "none", params={"source": "/d/rsicd.json"}),
    )
    src2 = source_of_file(imported)
    assert src2.kind == "files" and src2.file == "/d/rsicd.json"
    assert same_kind(src, src2)


def test_mixed_store_is_mixed(tmp_path: Path) -> None:
    path = _store(
        tmp_path / "m.jsonl",
        _rec("A/a.jpg", "openai", "qwen"),
        _rec("B/b.jpg", "attributes", VERSION, "none"),
    )
    src = source_of_file(path)
    assert src.kind == "mixed" and len(src.parts) == 2 and not src.regenerable


def test_same_kind_compares_model_prompt_and_version() -> None:
    from skyfuse.captioning import create_captioner

    attrs = source_of_captioner(create_captioner("attributes"))
    trained = CaptionSource(kind="captioner", backend="attributes", model=VERSION)
    assert same_kind(trained, attrs)
    older = CaptionSource(kind="captioner", backend="attributes", model="attributes-v0")
    assert not same_kind(older, attrs)
    ground, paper = resolve_prompt("ground"), resolve_prompt("paper")
    vlm = CaptionSource(
        kind="captioner", backend="openai", model="q", prompt_id="ground", prompt_hash=ground.hash
    )

    class Fake:
        backend = "openai"
        model = "q"

    assert same_kind(vlm, source_of_captioner(Fake(), ground))
    assert not same_kind(vlm, source_of_captioner(Fake(), paper))
    assert not same_kind(CaptionSource(), attrs)  # unknown matches nothing
    assert CaptionSource.from_dict(None).kind == "unknown"


def test_zeroshot_bundles_record_the_source_too(tmp_path: Path) -> None:
    import torch

    from skyfuse.training.bundle import read_manifest
    from skyfuse.zeroshot import aligned as al
    from skyfuse.zeroshot.model import save_zeroshot_model

    choice = al.Choice(0.5, 0.1, 5, 0.6, True, 0.3, 0.7, 0.6)
    scorer = al.AlignedScorer(al.AlignedMap(8, 16), torch.randn(16), choice)
    src = CaptionSource(kind="files", file="rsicd.json").to_dict()
    out = save_zeroshot_model(
        tmp_path / "zs",
        scorer,
        seen_classes=["a", "b"],
        image_encoder="i",
        text_encoder="t",
        caption_source=src,
    )
    assert read_manifest(out)["caption_source"] == src
