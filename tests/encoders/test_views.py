"""Dihedral views: exact transforms, one cache entry per view, row-aligned view tokens."""

from __future__ import annotations

import pytest
import torch

from skyfuse.data.folder import SceneFolder
from skyfuse.encoders.views import (
    DIHEDRAL_VIEWS,
    ViewEncoder,
    apply_view,
    extract_views,
    parse_views,
)
from skyfuse.errors import ConfigError


def test_the_eight_views_are_the_dihedral_group() -> None:
    x = torch.arange(9.0).view(1, 3, 3)  # no symmetry: every transform gives another array
    outs = [apply_view(x, v) for v in range(8)]
    assert torch.equal(outs[0], x)
    assert len({tuple(o.flatten().tolist()) for o in outs}) == 8
    # rot90 four times is the identity; a flip is its own inverse; rot180 = rot90 twice
    assert torch.equal(apply_view(apply_view(outs[1], 1), 2), x)
    assert torch.equal(apply_view(outs[4], 4), x)
    assert torch.equal(apply_view(outs[1], 1), outs[2])
    # the top-left corner goes where each transform sends it
    assert outs[1][0, 2, 0] == 0  # quarter turn counter-clockwise: top-left -> bottom-left
    assert outs[4][0, 0, 2] == 0  # horizontal flip: top-left -> top-right
    with pytest.raises(ConfigError):
        apply_view(x, 8)


def test_parse_views_accepts_only_subgroups() -> None:
    assert parse_views(1) == [0]
    assert parse_views(2) == [0, 4]
    assert parse_views(8) == list(range(8))
    with pytest.raises(ConfigError, match="--views"):
        parse_views(3)


def test_view_encoder_names_its_view_and_transforms_pixels(tiny_vit) -> None:
    enc = ViewEncoder(tiny_vit, 1)
    assert enc.encoder_id == f"{tiny_vit.encoder_id}@{DIHEDRAL_VIEWS[1]}"
    assert ViewEncoder(tiny_vit, 0).encoder_id == tiny_vit.encoder_id
    from PIL import Image

    img = Image.new("RGB", (32, 32))
    img.putpixel((0, 0), (255, 0, 0))
    torch.testing.assert_close(enc.preprocess([img]), apply_view(tiny_vit.preprocess([img]), 1))


def test_extract_views_caches_each_view_and_aligns_rows(
    scene, tiny_vit, tiny_bert, tmp_path, monkeypatch
) -> None:
    root, caps = scene
    folder = SceneFolder(root)
    calls = {"rows": 0}
    original = tiny_vit.encode

    def counting(pixels: torch.Tensor):
        calls["rows"] += pixels.shape[0]
        return original(pixels)

    monkeypatch.setattr(tiny_vit, "encode", counting)
    fs = extract_views(
        folder.samples,
        caps,
        tiny_vit,
        tiny_bert,
        views=4,
        cache_dir=tmp_path,
        batch_size=4,
        show_progress=False,
    )
    n = len(fs)
    assert n > 0 and calls["rows"] == 4 * n
    views = fs.image_views
    assert views is not None and len(views) == 4 and views.names[0] == "id"
    torch.testing.assert_close(views.tokens[0], fs.image_tokens)
    assert not torch.equal(views.tokens[1], views.tokens[0])  # another view, other features
    again = extract_views(
        folder.samples,
        caps,
        tiny_vit,
        tiny_bert,
        views=4,
        cache_dir=tmp_path,
        batch_size=4,
        show_progress=False,
    )
    assert calls["rows"] == 4 * n  # every view came from the cache
    torch.testing.assert_close(again.image_views.tokens[2], views.tokens[2])
    sub = fs.subset(fs.rels[::-1])
    torch.testing.assert_close(sub.image_views.tokens[3][0], views.tokens[3][-1])


def test_views_that_cannot_fit_in_memory_are_refused_before_extraction() -> None:
    from skyfuse.encoders.views import check_view_memory

    tokens = torch.zeros(10, 4, 8, dtype=torch.float16)
    check_view_memory(tokens, 8)  # a few kB: fine
    with pytest.raises(ConfigError, match="--views 8 needs about"):
        check_view_memory(tokens, 8, share=1e-12)
