"""``model.join: char``: one piece per Chinese character, on a hand-made Unigram tokenizer (exact
vocabulary), the real e5 tokenizer and a tiny e5 model trained, saved, loaded and run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from benchmarks import zh_input
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from complex_ner.core.config import ConfigError, DataConfig, ModelConfig, TrainConfig, load_params
from complex_ner.domain.alignment import (
    PieceTokenizer,
    align_sentences,
    alignment_stats,
    char_pieces,
    encode_sentences,
    join_words,
    merge_windows,
)
from complex_ner.domain.batch import collate
from complex_ner.domain.data import Sentence
from complex_ner.domain.models.tagger import Tagger, build_model
from complex_ner.engines.predict import load_tagger, predict_entities
from complex_ner.engines.train import fit

BARE = "\u2581"
Corpus = tuple[list[list[str]], list[list[str]]]

# 北 has both forms (the un-prefixed one wins), 京 only the word-initial one, 海 neither; the
# full-width comma normalises (NFKC) to ",", whose raw form is in the vocabulary but never used.
_VOCAB = [
    ("<unk>", 0.0),
    ("<pad>", 0.0),
    (BARE, -2.0),
    ("北", -3.0),
    (BARE + "北", -2.5),
    (BARE + "京", -3.0),
    (",", -3.0),
    ("，", -3.0),
    (BARE + "ab", -2.0),
    (BARE + "1", -3.0),
    ("5", -3.0),
]


@pytest.fixture(scope="module")
def unigram_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SentencePiece-style (Metaspace, NFKC) Unigram tokenizer saved like a model's."""
    backend = Tokenizer(models.Unigram(_VOCAB, unk_id=0, byte_fallback=False))
    backend.normalizer = normalizers.NFKC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace()]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>"
    )
    folder = tmp_path_factory.mktemp("unigram")
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def unigram(unigram_dir: Path) -> Any:
    return PreTrainedTokenizerFast.from_pretrained(str(unigram_dir))


def _tokens(tokenizer: Any, alignment: Any) -> list[str]:
    return tokenizer.convert_ids_to_tokens(alignment.piece_ids)


def _word_tokens(tokenizer: Any, alignment: Any) -> list[list[str]]:
    tokens = _tokens(tokenizer, alignment)
    return [[tokens[p] for p in pieces] for pieces in alignment.word_pieces]


# --------------------------------------------------------------------------- exact vocabulary


def test_char_prefers_the_unprefixed_piece_then_falls_back(unigram: Any) -> None:
    words = ["北", "京", "ab", "15", "，", "海"]
    space = align_sentences(unigram, [words], join="space")[0]
    char = align_sentences(unigram, [words], join="char")[0]
    assert _tokens(unigram, space)[0] == BARE + "北"  # the tokenizer's own choice...
    assert _word_tokens(unigram, char) == [
        ["北"],  # ...replaced by the un-prefixed piece
        [BARE + "京"],  # no un-prefixed piece: the word-initial one
        [BARE + "ab"],  # Latin and digits: exactly the space pieces
        [BARE + "1", "5"],
        [","],  # normalised first: the raw "，" entry is never produced by the tokenizer
        [BARE, "<unk>"],  # neither form: the space pieces are kept
    ]
    assert _word_tokens(unigram, space)[2:4] == _word_tokens(unigram, char)[2:4]
    assert _word_tokens(unigram, space)[5] == [BARE, "<unk>"]
    assert char.text == space.text and char.word_spans == space.word_spans
    assert char.piece_offsets[:2] == [(0, 1), (2, 3)]
    assert char.label_pieces == [0, 1, 2, 3, 5, 7]  # 海: its <unk>, not the bare "▁"


def test_char_pieces_reports_the_form_found(unigram: Any) -> None:
    found = char_pieces(unigram, ["北", "京", "，", "海", "北"])
    assert found == {
        "北": (unigram.convert_tokens_to_ids("北"), "北"),
        "京": (unigram.convert_tokens_to_ids(BARE + "京"), BARE + "京"),
        "，": (unigram.convert_tokens_to_ids(","), ","),
        "海": None,
    }


def test_raw_tokenizer_gives_the_same_char_alignment(unigram: Any, unigram_dir: Path) -> None:
    backend = Tokenizer.from_file(str(unigram_dir / "tokenizer.json"))
    raw = PieceTokenizer(backend, unigram.unk_token_id, unigram.pad_token_id)
    sentences = [["北", "京", "ab", "15", "，", "海"], ["海", "北"], ["ab"], []]
    for label_piece in ("first", "last"):
        want = align_sentences(unigram, sentences, label_piece=label_piece, join="char")
        assert align_sentences(raw, sentences, label_piece=label_piece, join="char") == want
    assert char_pieces(raw, ["北", "海"]) == char_pieces(unigram, ["北", "海"])


def test_join_words_char_joins_like_space() -> None:
    words = ["北", "京", "iPhone", "15"]
    assert join_words(words, "char") == join_words(words, "space")
    with pytest.raises(ValueError, match="'space', 'natural' or 'char'"):
        join_words(words, "tab")  # type: ignore[arg-type]


def test_params_accept_char_and_name_the_field(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("model: {join: char}\n", encoding="utf-8")
    assert load_params(path).model.join == "char"
    with pytest.raises(ConfigError, match="model.join"):
        load_params(path, ["model.join=chars"])


# --------------------------------------------------------------------------- the e5 tokenizer


def test_e5_chinese_gets_one_unprefixed_piece_per_character(e5_tokenizer: Any) -> None:
    words = ["北", "京", "大", "学", "在", "2007", "年", "用", "iphone", "，"]
    space = align_sentences(e5_tokenizer, [words], join="space", label_piece="last")[0]
    char = align_sentences(e5_tokenizer, [words], join="char", label_piece="last")[0]
    tokens = _tokens(e5_tokenizer, char)
    assert BARE + "大" in _tokens(e5_tokenizer, space)  # space join: one word-initial piece here
    assert [tokens[p] for p in char.label_pieces] == [
        "北",
        "京",
        "大",
        "学",
        "在",
        *_word_tokens(e5_tokenizer, space)[5],  # Latin and digit words as with space
        "年",
        "用",
        *_word_tokens(e5_tokenizer, space)[8],
        ",",
    ]
    assert all(len(pieces) == 1 for pieces in char.word_pieces)
    assert BARE not in tokens and len(tokens) < len(_tokens(e5_tokenizer, space))


def test_e5_char_windows_cover_every_word(
    e5_tokenizer: Any, conll_sample: Callable[[str, int], Corpus]
) -> None:
    sentences, _ = conll_sample("zh", 40)
    long = [w for s in sentences[:12] for w in s]  # several windows of 24 pieces
    batch = [*sentences, long]
    alignments = align_sentences(e5_tokenizer, batch, join="char")
    for words, alignment in zip(batch, alignments, strict=True):
        # Each CJK word is one piece of its own; nothing is shared.
        assert len(set(alignment.label_pieces)) == len(words)
        for word, pieces in zip(words, alignment.word_pieces, strict=True):
            if word.isascii():
                continue
            (piece,) = pieces
            assert alignment.piece_offsets[piece][1] - alignment.piece_offsets[piece][0] == 1
    windows = encode_sentences(e5_tokenizer, batch, 24, 6, join="char")
    assert sum(w.sentence_index == len(batch) - 1 for w in windows) > 1
    for window in windows:
        alignment = alignments[window.sentence_index]
        for word, index in zip(window.word_ids, window.word_piece_index, strict=True):
            assert window.input_ids[index] == alignment.piece_ids[alignment.label_pieces[word]]
    preds = [list(w.word_ids) for w in windows]
    merged = merge_windows(windows, preds, len(batch), [len(s) for s in batch])
    assert merged == [list(range(len(s))) for s in batch]
    stats = {j: alignment_stats(e5_tokenizer, batch, 24, 6, join=j) for j in ("space", "char")}
    assert stats["char"]["words_sharing_label_piece"] == 0
    assert stats["char"]["pieces"] < stats["space"]["pieces"]


# --------------------------------------------------------------------------- train, save, load


def test_char_tagger_round_trip_predicts_as_in_memory(
    tiny_e5_bert_dir: Path,
    conll_sample: Callable[[str, int], Corpus],
    toy_train_config: TrainConfig,
    tmp_path: Path,
    one_thread: None,
) -> None:
    words, tags = conll_sample("zh", 16)
    pairs = enumerate(zip(words, tags, strict=True))
    data = [Sentence(id=f"s{i}", tokens=tuple(w), tags=tuple(t)) for i, (w, t) in pairs]
    tagger = build_model(
        str(tiny_e5_bert_dir), DataConfig().tags, ModelConfig(join="char", dropout=0.0), "zh"
    )
    # One epoch: the saved best model is the in-memory one.
    cfg = toy_train_config.model_copy(update={"epochs": 1, "freeze_embeddings": True})
    fit(tagger, data, data[:4], cfg, tmp_path, DataConfig().entity_types)
    spec = json.loads((tmp_path / "model" / "tagger.json").read_text(encoding="utf-8"))["spec"]
    assert spec["join"] == "char" and spec["lang"] == "zh"
    texts = ["周杰伦在北京大学用iphone 15。", "长江，黄山"]
    expected = tagger.predict(words)
    batch = collate(tagger.encode(words), tagger.pad_id)
    with torch.inference_mode():
        emissions = tagger.eval().emissions(batch)
    loaded = Tagger.load(tmp_path / "model")
    assert loaded.spec.join == "char"
    assert loaded.encode(words) == tagger.encode(words)
    with torch.inference_mode():
        assert torch.allclose(loaded.emissions(batch), emissions, atol=1e-4)
    assert loaded.predict(words) == expected
    # The ONNX export (what prediction runs) cuts the same windows and tags alike.
    onnx = load_tagger(tmp_path / "model")
    assert onnx.spec.join == "char"
    assert onnx.encode(words) == tagger.encode(words)
    assert onnx.predict(words) == expected
    got, want = predict_entities(onnx, texts), predict_entities(tagger, texts)
    # Confidences are marginals of emissions onnxruntime computes to within float rounding.
    assert got == [
        [{**e, "confidence": pytest.approx(e["confidence"], abs=1e-4)} for e in row] for row in want
    ]


def test_benchmark_quick_compares_joins(
    tiny_e5_bert_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, one_thread: None
) -> None:
    path = tmp_path / "zh_input.json"
    # Two of the three joins keep the test short; the default runs all three.
    options = ["--encoder", str(tiny_e5_bert_dir), "--sentences", "8", "--joins", "space", "char"]
    record = zh_input.main(["--quick", *options, "--out", str(path)])
    written = json.loads(path.read_text(encoding="utf-8"))
    assert written["table"] == record["table"] and record["table"] in capsys.readouterr().out
    assert written["command"].startswith("python -m benchmarks.zh_input --quick")
    rows = {r["join"]: r for r in record["rows_detail"]}
    assert list(rows) == ["space", "char"]
    assert all(r["train_sentences"] == 8 and r["epochs"] == 1 for r in rows.values())
    assert all(0.0 <= r["macro_f1"] <= 1.0 for r in rows.values())
    assert rows["char"]["pieces_per_sentence"] < rows["space"]["pieces_per_sentence"]
    assert rows["char"]["shared_label_share"] == 0
    assert record["char_coverage"]["unprefixed"] > 0.9
