"""Schemathesis against a real `skyfuse serve` process: every answer is declared in /openapi.json.

Regression (issue 13): Schemathesis flagged 415 as undocumented. Bounded: a few dozen generated
requests per operation, a few seconds.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402

from skyfuse.serving.server import free_port, serve_subprocess, stop_subprocess, wait_healthy  # noqa: E402
from tests.inference.helpers import make_bundle  # noqa: E402


@pytest.fixture(scope="module")
def served_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    bundle = make_bundle(tmp_path_factory.mktemp("fuzz") / "model")
    port = free_port()
    proc = serve_subprocess(bundle, port, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, timeout_s=180.0, interval_s=0.2)
        yield schemathesis.openapi.from_url(url + "/openapi.json")
    finally:
        stop_subprocess(proc, timeout_s=10)


def test_every_answer_is_documented(served_schema: Any) -> None:
    # positive_data_acceptance is left out: schema-valid random bytes are not an image (415 is
    # the declared answer), which no JSON schema can express
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    operations = [result.ok() for result in served_schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/predict", "/health", "/classes"}
    for op in operations:

        @given(case=op.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=True,
        )
        def check(case: Any) -> None:
            case.call_and_validate(excluded_checks=[positive_data_acceptance])

        check()


def test_served_schema_declares_statuses_and_media_types(served_schema: Any) -> None:
    raw = served_schema.raw_schema
    post = raw["paths"]["/predict"]["post"]
    assert {"413", "415", "422", "502", "503", "504"} <= set(post["responses"])
    enc = post["requestBody"]["content"]["multipart/form-data"]["encoding"]["image"]
    assert "image/png" in enc["contentType"] and "gif" not in enc["contentType"]
    props = raw["components"]["schemas"]["PredictBody"]["properties"]
    assert {"caption", "caption_source", "caption_mismatch"} <= set(props)
