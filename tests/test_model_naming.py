"""The name a model serves under when its path has none of its own (`engine/model/naming.py`)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from parrot_server.engine.model import ModelNotFoundError, default_model_path, load_model
from parrot_server.engine.model.gguf import gguf_field, read_gguf
from parrot_server.engine.model.loader import gguf_cache_dir
from parrot_server.engine.model.naming import dir_model_name, gguf_model_name

SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"


def test_hf_cache_snapshot_is_named_after_its_repository(tmp_path):
    snap = tmp_path / "models--HuggingFaceTB--SmolLM2-135M-Instruct" / "snapshots" / SNAPSHOT
    snap.mkdir(parents=True)
    assert dir_model_name(snap) == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_hash_named_folder_takes_config_name(tmp_path):
    folder = tmp_path / SNAPSHOT[:16]
    folder.mkdir()
    assert dir_model_name(folder) == SNAPSHOT[:16]  # nothing better known
    (folder / "config.json").write_text(json.dumps({"_name_or_path": "Org/Tiny-Llama"}))
    assert dir_model_name(folder) == "Org/Tiny-Llama"
    (folder / "config.json").write_text(json.dumps({"_name_or_path": "/home/me/out/my-model"}))
    assert dir_model_name(folder) == "my-model"  # a local path: its last part


def test_named_folder_and_gguf_keep_their_names(tmp_path):
    folder = tmp_path / "my-llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_name_or_path": "something-else"}))
    assert dir_model_name(folder) == "my-llama"
    assert gguf_model_name(default_model_path()) == "SmolLM2-135M-Instruct"


def test_hash_named_gguf_takes_general_name(tmp_path):
    blob = tmp_path / ("sha256-" + SNAPSHOT + SNAPSHOT[:24])
    blob.symlink_to(default_model_path())
    general = gguf_field(read_gguf(default_model_path()), "general.name")
    assert general and gguf_model_name(blob) == general


@pytest.mark.slow
def test_a_snapshot_loads_under_its_repository_name(tmp_path):
    """The whole path: an HF folder laid out as huggingface_hub's cache serves as `Org/Name`."""
    snap = tmp_path / "models--Org--Smol" / "snapshots" / SNAPSHOT
    shutil.copytree(gguf_cache_dir(default_model_path()), snap)
    loaded = load_model(snap, dtype=torch.float32)
    assert loaded.name == "Org/Smol" and loaded.path == snap


def test_a_missing_model_names_its_path_and_a_hub_id_what_to_pass(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ModelNotFoundError, match=str(missing)):
        load_model(missing)
    with pytest.raises(ModelNotFoundError, match="never downloads") as info:
        load_model("Org/Some-Model")
    assert "huggingface-cli download Org/Some-Model --local-dir DIR" in str(info.value)
