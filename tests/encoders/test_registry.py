from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from skyfuse.encoders import (
    create_image_encoder,
    create_text_encoder,
    list_image_encoders,
    list_text_encoders,
)
from skyfuse.errors import CheckpointError, ConfigError


def test_lists_name_builtins_and_prefixes() -> None:
    assert {"efficientnet-lite0", "hf:", "openclip:"} <= set(list_image_encoders())
    assert {"minilm", "hf:", "openclip:"} <= set(list_text_encoders())


def test_unknown_name_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"known: .*efficientnet-lite0"):
        create_image_encoder("resnet-9000")
    with pytest.raises(ConfigError, match="lacks its argument"):
        create_text_encoder("hf:")


def test_openclip_without_extra_is_one_clear_line(tmp_path: Path) -> None:
    try:
        import open_clip  # noqa: F401

        pytest.skip("open_clip installed; the error path cannot be exercised")
    except ImportError:
        pass
    ckpt = tmp_path / "RemoteCLIP-ViT-B-32.pt"
    ckpt.write_bytes(b"x")
    for create in (create_image_encoder, create_text_encoder):
        with pytest.raises(ConfigError, match=r"pip install 'skyfuse\[openclip\]'") as err:
            create(f"openclip:ViT-B-32@{ckpt}")
        assert "\n" not in str(err.value)


def test_missing_local_folder(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="model folder not found"):
        create_image_encoder(f"hf:{tmp_path / 'nope'}")


def test_hub_id_offline_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(
        CheckpointError, match=r"offline.*hf download google/vit-base-patch16-224-in21k"
    ):
        create_image_encoder("hf:google/vit-base-patch16-224-in21k")
    with pytest.raises(CheckpointError, match="offline"):
        create_text_encoder("hf:openai/clip-vit-base-patch32")


def test_folder_without_weights(tmp_path: Path, vit_folder: Path) -> None:
    broken = tmp_path / "vit"
    shutil.copytree(vit_folder, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model weights"):
        create_image_encoder(f"hf:{broken}")


def test_folder_without_preprocessor_config(tmp_path: Path, vit_folder: Path) -> None:
    broken = tmp_path / "vit"
    shutil.copytree(vit_folder, broken)
    (broken / "preprocessor_config.json").unlink()
    with pytest.raises(CheckpointError, match=r"preprocessor_config\.json: missing"):
        create_image_encoder(f"hf:{broken}")


def test_corrupt_weights(tmp_path: Path, bert_folder: Path) -> None:
    broken = tmp_path / "bert"
    shutil.copytree(bert_folder, broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="cannot load the text model"):
        create_text_encoder(f"hf:{broken}")


def test_encoders_remember_how_they_were_made(tiny_bert, bert_folder: Path) -> None:
    assert tiny_bert.registry_name == f"hf:{bert_folder}" and tiny_bert.create_kwargs == {}
    again = create_text_encoder(tiny_bert.registry_name, **tiny_bert.create_kwargs)
    assert again.encoder_id == tiny_bert.encoder_id
