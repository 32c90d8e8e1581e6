from __future__ import annotations

from pathlib import Path

import pytest

from tests.inference.helpers import make_bundle


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle") / "model")
