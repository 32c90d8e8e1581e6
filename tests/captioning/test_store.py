from __future__ import annotations

import json
from pathlib import Path

import pytest

from skyfuse.captioning.store import CaptionStore, make_record, merge_stores, read_records
from skyfuse.errors import BadInputError


def rec(
    path: str, sha: str, caption: str | None = "a caption", model: str = "m", **kw: object
) -> dict:
    return make_record(
        rel=path,
        sha256=sha,
        caption=caption,
        backend="test",
        model=model,
        prompt_id="ground",
        prompt_hash="h",
        params={},
        is_vlm=True,
        latency_s=0.1,
        **kw,
    )  # type: ignore[arg-type]


def test_append_resume_and_no_duplicates(tmp_path: Path) -> None:
    out = tmp_path / "s.jsonl"
    with CaptionStore(out) as st:
        st.append(rec("A/a.png", "1"))
        st.append(rec("A/a.png", "1"))  # same work: ignored
        st.append(rec("A/b.png", "2", caption=None, error="boom"))
    with CaptionStore(out) as st:
        assert st.is_done(("1", "m", "h"))
        assert not st.is_done(("2", "m", "h"))  # failures are retried
        st.append(rec("A/b.png", "2"))
        assert st.is_done(("2", "m", "h"))
    recs = read_records(out)
    assert [r["status"] for r in recs] == ["ok", "error", "ok"]


def test_torn_last_line_is_repaired(tmp_path: Path) -> None:
    out = tmp_path / "s.jsonl"
    with CaptionStore(out) as st:
        st.append(rec("A/a.png", "1"))
    with open(out, "ab") as f:
        f.write(b'{"path": "A/b.png", "sha2')
    with CaptionStore(out) as st:
        assert st.state.records == 1
        st.append(rec("A/b.png", "2"))
    assert len(read_records(out)) == 2
    assert out.read_bytes().endswith(b"\n")
    assert (tmp_path / "s.jsonl.torn").read_bytes().startswith(b'{"path": "A/b.png"')


def test_corrupt_middle_line_names_the_line(tmp_path: Path) -> None:
    out = tmp_path / "s.jsonl"
    out.write_text(
        json.dumps(rec("A/a.png", "1")) + "\nnot json\n" + json.dumps(rec("A/b.png", "2")) + "\n"
    )
    with pytest.raises(BadInputError, match=r"s.jsonl:2"):
        read_records(out)


def test_second_writer_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "s.jsonl"
    with CaptionStore(out), pytest.raises(BadInputError, match="another captioning run"):
        CaptionStore(out).open()


def test_merge_reports_conflicts_and_keeps_latest(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    with CaptionStore(a) as st:
        st.append(rec("A/a.png", "1", caption="first"))
        st.append(rec("A/c.png", "3", caption=None, error="timeout"))
    with CaptionStore(b) as st:
        st.append(rec("A/a.png", "1", caption="second"))
        st.append(rec("A/b.png", "2"))
        st.append(rec("A/c.png", "3", caption="done now"))
    report = merge_stores([a, b], tmp_path / "m.jsonl")
    merged = {r["path"]: r for r in read_records(tmp_path / "m.jsonl")}
    assert set(merged) == {"A/a.png", "A/b.png", "A/c.png"}
    assert merged["A/a.png"]["caption"] == "second"
    assert merged["A/c.png"]["status"] == "ok"
    assert len(report.conflicts) == 1 and report.conflicts[0].dropped == ["first"]
    assert report.records_in == 5 and report.records_out == 3


def test_group_commit_writes_each_record_once(tmp_path: Path) -> None:
    out = tmp_path / "s.jsonl"
    with CaptionStore(out) as st:
        st.append_many([rec("A/a.png", "1"), rec("A/a.png", "1"), rec("A/b.png", "2")])
        st.append_many([rec("A/a.png", "1"), rec("A/c.png", "3", caption=None, error="x")])
    assert [r["path"] for r in read_records(out)] == ["A/a.png", "A/b.png", "A/c.png"]


def test_any_truncation_is_repaired_to_a_prefix(tmp_path: Path) -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    full = tmp_path / "full.jsonl"
    with CaptionStore(full) as s:
        for i in range(6):
            s.append(rec(f"A/{i}.png", str(i), caption=f"caption {i} ünïcode"))
    data = full.read_bytes()
    originals = read_records(full)

    @settings(max_examples=60, deadline=None)
    @given(st.integers(min_value=0, max_value=len(data)))
    def check(cut: int) -> None:
        path = tmp_path / "cut.jsonl"
        path.write_bytes(data[:cut])
        (tmp_path / "cut.jsonl.torn").unlink(missing_ok=True)
        with CaptionStore(path) as s:
            kept = s.state.records
            s.append(rec("A/new.png", "new"))
        recs = read_records(path)
        assert recs[:kept] == originals[:kept] and recs[-1]["path"] == "A/new.png"
        assert len(recs) == kept + 1 and path.read_bytes().endswith(b"\n")

    check()


def test_a_file_that_is_not_a_store_is_refused_and_left_alone(tmp_path: Path) -> None:
    """Regression: `skyfuse caption -o` an existing path,caption JSONL crashed with KeyError."""
    other = tmp_path / "captions.jsonl"
    body = '{"path": "a.jpg", "caption": "sand"}\n{"path": "b.jpg", "capt'
    other.write_text(body)
    with pytest.raises(BadInputError, match=r"not a caption store.*another --out"):
        CaptionStore(other).open()
    assert other.read_text() == body  # the torn-looking tail was not "repaired" away
    assert not (tmp_path / "captions.jsonl.torn").exists()
    with CaptionStore(other.with_name("fresh.jsonl")) as store:  # the fd was released
        assert store.state.records == 0
