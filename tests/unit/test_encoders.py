"""Encoder provisioning, resolution and loading; nothing here may reach a model hub."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

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


def test_tiny_random_bert_has_the_asked_sizes_and_runs(tmp_path: Path) -> None:
    folder = tiny_random_bert(minilm_dir(), tmp_path / "bert", hidden=24, layers=1, heads=3)
    tokenizer = load_tokenizer(str(folder))
    model = load_encoder(str(folder), dropout=0.0)
    assert tokenizer.is_fast
    assert (model.config.hidden_size, model.config.num_hidden_layers) == (24, 1)
    assert model.config.num_attention_heads == 3
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.hidden_dropout_prob == 0.0
    assert model.config.attention_probs_dropout_prob == 0.0
    assert not any(path.suffix in (".bin", ".pt", ".pkl") for path in folder.iterdir())
    encoded = tokenizer(["el museo del prado"], return_tensors="pt")
    with torch.no_grad():
        hidden = model(**encoded).last_hidden_state
    assert hidden.shape == (1, encoded["input_ids"].shape[1], 24)


def test_tiny_random_bert_is_seeded_and_leaves_global_rng(
    tmp_path: Path, tiny_bert_dir: Path
) -> None:
    from safetensors.torch import load_file

    state = torch.get_rng_state()
    again = tiny_random_bert(minilm_dir(), tmp_path / "again")
    assert torch.equal(torch.get_rng_state(), state)
    first = load_file(str(tiny_bert_dir / "model.safetensors"))
    second = load_file(str(again / "model.safetensors"))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert _siblings(again) == ["again"]  # no staging folder left behind
    other = load_file(
        str(tiny_random_bert(minilm_dir(), tmp_path / "other", seed=1) / "model.safetensors")
    )
    assert not all(torch.equal(first[name], other[name]) for name in first)


def test_load_encoder_rejects_bad_dropout(tiny_bert_dir: Path) -> None:
    with pytest.raises(ValueError, match="dropout"):
        load_encoder(str(tiny_bert_dir), dropout=1.5)


def test_tiny_random_bert_rejects_bad_sizes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="divisible"):
        tiny_random_bert(minilm_dir(), tmp_path / "bad", hidden=30, heads=4)


# --------------------------------------------------------------------------- tokenizer-only


def test_provisioned_tokenizer_is_fast_xlmr(e5_tokenizer_dir: Path, e5_tokenizer: Any) -> None:
    assert sorted(path.name for path in e5_tokenizer_dir.iterdir()) == [
        "provenance.json",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    provenance = json.loads((e5_tokenizer_dir / "provenance.json").read_text())
    assert provenance["contents"] == "tokenizer"
    tokenizer = e5_tokenizer
    assert tokenizer.is_fast
    encoded = tokenizer("el museo <mask> 北京", return_offsets_mapping=True)
    assert encoded["input_ids"][0] == tokenizer.cls_token_id
    assert encoded["input_ids"].count(tokenizer.mask_token_id) == 1  # "<mask>" is one piece
    assert tokenizer.unk_token_id not in encoded["input_ids"]  # Chinese is in the vocabulary
    assert tokenizer.pad_token_id not in encoded["input_ids"]
    assert encoded["offset_mapping"][1] == (0, 2)  # "▁el" covers "el", not the space


def test_provision_tokenizer_is_idempotent(e5_tokenizer_dir: Path) -> None:
    before = _mtimes(e5_tokenizer_dir)
    assert provision_tokenizer(e5_tokenizer_dir) == e5_tokenizer_dir
    assert _mtimes(e5_tokenizer_dir) == before


def test_provision_rebuilds_a_folder_from_another_source(
    tmp_path: Path, e5_tokenizer_dir: Path
) -> None:
    folder = tmp_path / "tokenizer"
    shutil.copytree(e5_tokenizer_dir, folder)
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
    tmp_path: Path, e5_tokenizer_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "tokenizer"
    shutil.copytree(e5_tokenizer_dir, folder)
    before = _mtimes(folder)

    def crash(image: object, folder: Path) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(encoders, "_write_tokenizer", crash)
    with pytest.raises(KeyboardInterrupt):
        provision_tokenizer(folder, force=True)
    assert _mtimes(folder) == before
    assert _siblings(folder) == ["tokenizer"]
