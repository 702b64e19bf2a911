"""Vocabulary trimming: same pieces, same encoder outputs, smaller matrices."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from complex_ner.domain.encoders import load_encoder, load_tokenizer
from complex_ner.domain.vocab import TRIM_FILE, TrimReport, script_piece_ids, trim_encoder

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


# --------------------------------------------------------------------------- keep_char_pieces


def _pieces(folder: Path) -> list[str]:
    spec = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    if spec["model"]["type"] == "Unigram":
        return [entry[0] for entry in spec["model"]["vocab"]]
    return sorted(spec["model"]["vocab"], key=spec["model"]["vocab"].get)


def test_script_pieces_are_the_single_characters_of_the_languages_scripts(
    e5_tokenizer_dir: Path, tiny_bert_dir: Path
) -> None:
    pieces = _pieces(e5_tokenizer_dir)
    es = {pieces[i] for i in script_piece_ids(pieces, ["es"])}
    zh = {pieces[i] for i in script_piece_ids(pieces, ["zh"])}
    assert {"ñ", "ü", "é", "\u2581é", "ễ", "7", "\u25817", ",", "€", "Ω", "ж"} <= es
    assert "北" not in es and "ア" not in es
    assert {"北", "饕", "ア"} <= zh
    assert es < zh  # Latin, digits and punctuation are every language's
    assert all(len(p) == 1 or (len(p) == 2 and p[0] == "\u2581") for p in zh)
    assert script_piece_ids(pieces, []) == set()
    assert "###" not in zh  # a piece of its own, not "#" continued
    wordpiece = _pieces(tiny_bert_dir)
    kept = {wordpiece[i] for i in script_piece_ids(wordpiece, ["es"], "##")}
    assert {"x", "##x", "7"} <= kept and "北" not in kept


@pytest.mark.parametrize(
    ("fixture", "texts"),
    [
        # Characters CORPUS lacks: ü, ñ, x, y, k (Latin) and four rare ideographs.
        ("tiny_e5_bert_dir", ["pingüino en ñuñoa", "xylokoto", "饕餮 貔貅"]),
        ("tiny_bert_dir", ["xylokoto", "wok"]),
    ],
)
def test_char_pieces_keep_unseen_characters_known(
    fixture: str, texts: list[str], request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    source = request.getfixturevalue(fixture)
    plain = trim_encoder(source, CORPUS, tmp_path / "plain")
    chars = trim_encoder(
        source, CORPUS, tmp_path / "chars", char_languages=["es", "zh"], source_label="enc"
    )
    assert chars.script_pieces > 0
    assert chars.vocab_after == plain.vocab_after + chars.script_pieces
    assert chars.char_languages == ("es", "zh")
    recorded = json.loads((tmp_path / "chars" / TRIM_FILE).read_text(encoding="utf-8"))
    assert recorded["source"] == "enc" and "output" not in recorded
    full, before, after = (load_tokenizer(str(f)) for f in (source, plain.output, chars.output))
    for text in texts:
        assert full.unk_token_id not in full(text)["input_ids"]
        assert before.unk_token_id in before(text)["input_ids"], text
        ids = after(text)["input_ids"]
        assert after.unk_token_id not in ids, text
        words = after.convert_tokens_to_string(after.convert_ids_to_tokens(ids[1:-1]))
        assert words.replace(" ", "") == text.replace(" ", "")
    # The corpus still tokenizes exactly as with the full vocabulary.
    for text in CORPUS:
        assert full.tokenize(text) == after.tokenize(text)
