"""Vocabulary trimming: same pieces, same encoder outputs, smaller matrices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from complex_ner.domain.encoders import load_encoder, load_tokenizer, minilm_dir, tiny_random_bert
from complex_ner.domain.vocab import trim_encoder

try:
    from helpers_tokenizers import e5_tokenizer_dir
except ImportError:  # tests/ laid out as a package
    from tests.unit.helpers_tokenizers import e5_tokenizer_dir

CORPUS = [
    "el museo del prado está en madrid",
    "la orquesta filarmónica de viena tocó en el teatro real",
    "北京大学位于海淀区",
    "real madrid ganó la copa",
]


def _outputs(folder: Path, text: str) -> tuple[list[str], torch.Tensor]:
    tokenizer = load_tokenizer(str(folder))
    encoder = load_encoder(str(folder)).eval()
    encoded = tokenizer(text, return_tensors="pt")
    with torch.inference_mode():
        # shape: (1, pieces, hidden)
        hidden = encoder(**encoded).last_hidden_state
    return tokenizer.convert_ids_to_tokens(encoded["input_ids"][0]), hidden


@pytest.fixture(scope="module")
def wordpiece_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_random_bert(minilm_dir(), tmp_path_factory.mktemp("wp") / "bert", hidden=32)


@pytest.fixture(scope="module")
def unigram_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The e5 (XLM-R unigram) tokenizer under a tiny random BERT: 250k rows of 16 floats.
    return tiny_random_bert(
        e5_tokenizer_dir(tmp_path_factory), tmp_path_factory.mktemp("ug") / "bert", hidden=16
    )


@pytest.mark.parametrize("model_fixture", ["wordpiece_model", "unigram_model"])
def test_trimmed_encoder_matches_original_on_the_corpus(
    model_fixture: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    source: Path = request.getfixturevalue(model_fixture)
    out = tmp_path / "trimmed"
    report = trim_encoder(source, CORPUS, out)
    assert report.vocab_after < report.vocab_before / 20
    assert report.params_after < report.params_before
    config = json.loads((out / "config.json").read_text())
    assert config["vocab_size"] == report.vocab_after
    for text in CORPUS:
        tokens_before, hidden_before = _outputs(source, text)
        tokens_after, hidden_after = _outputs(out, text)
        assert tokens_after == tokens_before
        assert torch.equal(hidden_after, hidden_before)
    trimmed = load_tokenizer(str(out))
    original = load_tokenizer(str(source))
    assert trimmed.convert_ids_to_tokens(trimmed.pad_token_id) == original.pad_token
    assert len(trimmed) == report.vocab_after
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no staging left


def test_unseen_word_of_seen_characters_avoids_unknown(unigram_model: Path, tmp_path: Path) -> None:
    trim_encoder(unigram_model, CORPUS, tmp_path / "t")
    tokenizer = load_tokenizer(str(tmp_path / "t"))
    pieces = tokenizer.tokenize("madera")  # not in the corpus, its letters are
    assert tokenizer.unk_token not in pieces
    assert "".join(pieces).replace("\u2581", "") == "madera"


def test_trim_refuses_bpe_and_empty_corpus(wordpiece_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="corpus is empty"):
        trim_encoder(wordpiece_model, [], tmp_path / "x")
    bpe = tmp_path / "bpe"
    bpe.mkdir()
    spec = json.loads((wordpiece_model / "tokenizer.json").read_text())
    spec["model"]["type"] = "BPE"
    (bpe / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match=r"tokenizer.json: model.type 'BPE'"):
        trim_encoder(bpe, CORPUS, tmp_path / "y")
    assert not (tmp_path / "y").exists()


def test_trim_reports_missing_weights(wordpiece_model: Path, tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("tokenizer.json", "config.json"):
        (partial / name).write_bytes((wordpiece_model / name).read_bytes())
    with pytest.raises(FileNotFoundError, match=r"model.safetensors: missing"):
        trim_encoder(partial, CORPUS, tmp_path / "z")
