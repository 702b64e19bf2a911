"""Vocabulary trimming: same pieces, same encoder outputs, smaller matrices."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from complex_ner.domain.encoders import load_encoder, load_tokenizer
from complex_ner.domain.vocab import TrimReport, trim_encoder

CORPUS = [
    "el museo del prado está en madrid",
    "la orquesta filarmónica de viena tocó en el teatro real",
    "北京大学位于海淀区",
    "real madrid ganó la copa",
]


def _outputs(folder: Path) -> tuple[Any, list[tuple[list[str], torch.Tensor]]]:
    """The folder's tokenizer, and the pieces and hidden states of each corpus sentence."""
    tokenizer = load_tokenizer(str(folder))
    encoder = load_encoder(str(folder)).eval()
    out = []
    for text in CORPUS:
        encoded = tokenizer(text, return_tensors="pt")
        with torch.inference_mode():
            # shape: (1, pieces, hidden)
            hidden = encoder(**encoded).last_hidden_state
        out.append((tokenizer.convert_ids_to_tokens(encoded["input_ids"][0]), hidden))
    return tokenizer, out


def _trim(source: Path, factory: pytest.TempPathFactory) -> tuple[Path, TrimReport, Path]:
    out = factory.mktemp("trim") / "trimmed"
    return source, trim_encoder(source, CORPUS, out), out


@pytest.fixture(scope="module")
def trimmed_wordpiece(
    tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, TrimReport, Path]:
    """(source, report, output) of trimming the tiny BERT with the MiniLM WordPiece tokenizer."""
    return _trim(tiny_bert_dir, tmp_path_factory)


@pytest.fixture(scope="module")
def trimmed_unigram(
    tiny_e5_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, TrimReport, Path]:
    """(source, report, output) of trimming the tiny BERT with the e5 unigram (XLM-R, 250k)."""
    return _trim(tiny_e5_bert_dir, tmp_path_factory)


@pytest.mark.parametrize("trimmed", ["trimmed_wordpiece", "trimmed_unigram"])
def test_trimmed_encoder_matches_original_on_the_corpus(
    trimmed: str, request: pytest.FixtureRequest
) -> None:
    source, report, out = request.getfixturevalue(trimmed)
    assert report.vocab_after < report.vocab_before / 20
    assert report.params_after < report.params_before
    config = json.loads((out / "config.json").read_text())
    assert config["vocab_size"] == report.vocab_after
    original, before = _outputs(source)
    trimmed_tokenizer, after = _outputs(out)
    for (tokens_before, hidden_before), (tokens_after, hidden_after) in zip(
        before, after, strict=True
    ):
        assert tokens_after == tokens_before
        assert torch.equal(hidden_after, hidden_before)
    pad = trimmed_tokenizer.pad_token_id
    assert trimmed_tokenizer.convert_ids_to_tokens(pad) == original.pad_token
    assert len(trimmed_tokenizer) == report.vocab_after
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no staging left


def test_unseen_word_of_seen_characters_avoids_unknown(
    trimmed_unigram: tuple[Path, TrimReport, Path],
) -> None:
    tokenizer = load_tokenizer(str(trimmed_unigram[2]))
    pieces = tokenizer.tokenize("madera")  # not in the corpus, its letters are
    assert tokenizer.unk_token not in pieces
    assert "".join(pieces).replace("\u2581", "") == "madera"


def test_trim_refuses_bpe_and_empty_corpus(tiny_bert_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="corpus is empty"):
        trim_encoder(tiny_bert_dir, [], tmp_path / "x")
    bpe = tmp_path / "bpe"
    bpe.mkdir()
    spec = json.loads((tiny_bert_dir / "tokenizer.json").read_text())
    spec["model"]["type"] = "BPE"
    (bpe / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match=r"tokenizer.json: model.type 'BPE'"):
        trim_encoder(bpe, CORPUS, tmp_path / "y")
    assert not (tmp_path / "y").exists()


def test_trim_reports_missing_weights(tiny_bert_dir: Path, tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("tokenizer.json", "config.json"):
        (partial / name).write_bytes((tiny_bert_dir / name).read_bytes())
    with pytest.raises(FileNotFoundError, match=r"model.safetensors: missing"):
        trim_encoder(partial, CORPUS, tmp_path / "z")
