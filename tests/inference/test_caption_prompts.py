"""Captioning at prediction time with whatever prompt id a bundle recorded (regression: `none`)."""

from __future__ import annotations

import logging

import pytest

from skyfuse.captioning import create_captioner
from skyfuse.captioning.prompts import DEFAULT_PROMPT, resolve_prompt
from skyfuse.inference.captions import captions_from_captioner, prompt_for
from tests.inference.helpers import random_image


@pytest.mark.parametrize("recorded", [None, "", "none"])
def test_prompt_free_bundles_caption_with_the_default(recorded: str | None) -> None:
    assert prompt_for(recorded) == resolve_prompt(DEFAULT_PROMPT)


def test_builtin_prompt_kept() -> None:
    assert prompt_for("paper").id == "paper"


def test_lost_custom_prompt_warns_and_falls_back(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        got = prompt_for("my-prompt-file-that-is-elsewhere")
    assert got.id == DEFAULT_PROMPT
    assert "my-prompt-file-that-is-elsewhere" in caplog.text


def test_bundle_trained_on_imported_captions_still_captions() -> None:
    captioner = create_captioner("attributes")
    caps = captions_from_captioner(captioner, [random_image(seed=1)], prompt="none")
    assert len(caps) == 1 and len(caps[0].split()) >= 3
