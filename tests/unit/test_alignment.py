"""Word <-> piece alignment, windows and merging, on real MultiCoNER sentences and tokenizers."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch

from complex_ner.domain.alignment import (
    EncodedWindow,
    align_sentences,
    encode_sentences,
    join_words,
    merge_windows,
)
from complex_ner.domain.batch import collate, gather_words
from complex_ner.domain.encoders import load_encoder, load_tokenizer

BARE = "\u2581"


@pytest.fixture(params=["minilm", "e5"])
def tokenizer(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(f"{request.param}_tokenizer")  # tests/conftest.py


@pytest.fixture(scope="module")
def e5(e5_tokenizer: Any) -> Any:
    return e5_tokenizer  # tests/conftest.py


def _affixes(tokenizer: Any) -> tuple[list[int], list[int]]:
    with_special = tokenizer("a")["input_ids"]
    content = tokenizer("a", add_special_tokens=False)["input_ids"]
    start = next(
        i for i in range(len(with_special)) if with_special[i : i + len(content)] == content
    )
    return with_special[:start], with_special[start + len(content) :]


def _content_pieces(tokenizer: Any, alignment: Any, word: int) -> list[int]:
    """Pieces overlapping the word's characters that carry text (not a bare ``▁``)."""
    start, end = alignment.word_spans[word]
    tokens = tokenizer.convert_ids_to_tokens(alignment.piece_ids)
    return [
        piece
        for piece, (s, e) in enumerate(alignment.piece_offsets)
        if s < end and start < e and tokens[piece].strip(BARE + "\u0120 ")
    ]


# --------------------------------------------------------------------------- real sentences


@pytest.mark.parametrize("lang", ["es", "zh"])
@pytest.mark.parametrize("label_piece", ["first", "last"])
def test_every_word_gets_one_label_piece_inside_it(
    tokenizer: Any, lang: str, label_piece: str, conll_sample: Any
) -> None:
    sentences, _ = conll_sample(lang, 300)
    alignments = align_sentences(tokenizer, sentences, label_piece=label_piece)
    for words, alignment in zip(sentences, alignments, strict=True):
        assert len(alignment.label_pieces) == len(words)
        for word, text in enumerate(words):
            start, end = alignment.word_spans[word]
            assert alignment.text[start:end] == text
            label = alignment.label_pieces[word]
            s, e = alignment.piece_offsets[label]
            assert s < end and start < e, (text, alignment.piece_offsets[label])
            # Round trip: the word's pieces cover exactly its characters (space join).
            pieces = alignment.word_pieces[word]
            lo = min(alignment.piece_offsets[p][0] for p in pieces)
            hi = max(alignment.piece_offsets[p][1] for p in pieces)
            assert alignment.text[lo:hi] == text
            content = _content_pieces(tokenizer, alignment, word)
            assert label == (content[0] if label_piece == "first" else content[-1])
        assert alignment.dropped_words == []


@pytest.mark.parametrize("lang", ["es", "zh"])
def test_windows_of_real_sentences_merge_back(tokenizer: Any, lang: str, conll_sample: Any) -> None:
    sentences, _ = conll_sample(lang, 300)
    windows = encode_sentences(tokenizer, sentences, max_length=128, stride=32)
    alignments = align_sentences(tokenizer, sentences)
    for window in windows:
        alignment = alignments[window.sentence_index]
        for word, index in zip(window.word_ids, window.word_piece_index, strict=True):
            assert window.input_ids[index] == alignment.piece_ids[alignment.label_pieces[word]]
    preds = [[(w.sentence_index, word) for word in w.word_ids] for w in windows]
    merged = merge_windows(windows, preds, len(sentences), [len(s) for s in sentences])
    assert merged == [[(i, j) for j in range(len(s))] for i, s in enumerate(sentences)]


def test_first_and_last_piece_of_a_split_word(tokenizer: Any) -> None:
    words = ["el", "museo", "del", "prado"]
    first = align_sentences(tokenizer, [words], label_piece="first")[0]
    last = align_sentences(tokenizer, [words], label_piece="last")[0]
    tokens = tokenizer.convert_ids_to_tokens(first.piece_ids)
    prado_first, prado_last = first.label_pieces[3], last.label_pieces[3]
    assert prado_first < prado_last  # "prado" is two pieces for both tokenizers
    assert tokens[prado_first].strip(BARE).startswith("pr")
    assert tokens[prado_last].lstrip("#").endswith("do")
    assert first.label_pieces[:3] == last.label_pieces[:3]  # one-piece words


def test_chinese_never_labels_the_bare_space_piece(e5: Any) -> None:
    alignment = align_sentences(e5, [["北", "京", "大", "学"]])[0]
    tokens = e5.convert_ids_to_tokens(alignment.piece_ids)
    assert BARE in tokens  # space-joined Chinese gets bare "▁" pieces...
    labelled = [tokens[p] for p in alignment.label_pieces]
    assert [t.strip(BARE) for t in labelled] == ["北", "京", "大", "学"]  # ...never labelled


def test_natural_join_shares_multi_character_pieces(e5: Any) -> None:
    words = ["北", "京", "大", "学", "在", "2007", "年"]
    text, spans = join_words(words, join="natural")
    assert text == "北京大学在 2007 年"
    assert spans[5] == (6, 10)
    alignment = align_sentences(e5, [words], join="natural")[0]
    tokens = e5.convert_ids_to_tokens(alignment.piece_ids)
    labels = alignment.label_pieces
    assert labels[0] == labels[1] and tokens[labels[0]] == "北京"
    assert labels[2] == labels[3] and tokens[labels[2]] == "大学"
    assert len(set(labels)) == 5
    windows = encode_sentences(e5, [words], join="natural")
    assert windows[0].word_piece_index[0] == windows[0].word_piece_index[1]


def test_dropped_words_get_an_unknown_piece_in_place(tokenizer: Any) -> None:
    words = ["hola", "\x07", "mundo", "\u200b", "\u0301", "fin", ""]
    alignment = align_sentences(tokenizer, [words])[0]
    # The tokenizers drop control characters and "" alone; a lone accent depends on the tokenizer.
    alone = [tokenizer(word, add_special_tokens=False)["input_ids"] for word in words]
    assert alignment.dropped_words == [word for word, ids in enumerate(alone) if not ids]
    assert {1, 3, 6} <= set(alignment.dropped_words)
    unk = tokenizer.unk_token_id
    for word in alignment.dropped_words:
        assert alignment.piece_ids[alignment.label_pieces[word]] == unk
    # Every word keeps its own position, in word order.
    assert alignment.label_pieces == sorted(set(alignment.label_pieces))
    windows = encode_sentences(tokenizer, [words])
    assert windows[0].word_ids == list(range(len(words)))


class _NoUnknownToken:
    """A tokenizer without an unknown token (like byte-level BPE), wrapping a real one."""

    unk_token_id = None

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._tokenizer(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tokenizer, name)


def test_dropped_word_borrows_nearest_piece_without_unknown_token(tokenizer: Any) -> None:
    alignment = align_sentences(_NoUnknownToken(tokenizer), [["\x07", "hola", "\x07"]])[0]
    assert alignment.dropped_words == [0, 2]
    assert alignment.label_pieces[0] == alignment.label_pieces[1]
    assert alignment.label_pieces[2] == alignment.label_pieces[1]
    assert tokenizer.unk_token_id not in alignment.piece_ids
    with pytest.raises(ValueError, match="dropped"):
        align_sentences(_NoUnknownToken(tokenizer), [["\x07"]])


# --------------------------------------------------------------------------- long sentences


def _long_sentence(conll_sample: Any, n_words: int) -> list[str]:
    sentences, _ = conll_sample("es", 300)
    words = [word for sentence in sentences for word in sentence]
    return words[:n_words]


def _context_score(window: EncodedWindow, position: int, prefix: int, suffix: int, n: int) -> float:
    left = window.word_piece_index[position] - prefix if window.word_ids[0] > 0 else float("inf")
    last_piece = len(window.input_ids) - suffix - 1
    right = last_piece - window.word_piece_index[position]
    return min(left, right if window.word_ids[-1] < n - 1 else float("inf"))


@pytest.mark.parametrize("label_piece", ["first", "last"])
def test_long_sentence_windows_cover_every_word_once(
    tokenizer: Any, label_piece: str, conll_sample: Any
) -> None:
    long = _long_sentence(conll_sample, 500)
    assert len(long) == 500
    sentences = [["corto"], long, ["otra", "frase"]]
    windows = encode_sentences(tokenizer, sentences, 32, stride=8, label_piece=label_piece)
    prefix, suffix = _affixes(tokenizer)
    affix_sizes = (len(prefix), len(suffix))
    alignment = align_sentences(tokenizer, [long], label_piece=label_piece)[0]
    mine = [w for w in windows if w.sentence_index == 1]
    assert len(mine) > 500 * 1.4 / 30  # at least the pieces / window budget
    for window in windows:
        assert len(window.input_ids) <= 32
        assert window.input_ids[: len(prefix)] == prefix
        assert window.input_ids[len(window.input_ids) - len(suffix) :] == suffix
        assert window.word_ids == list(range(window.word_ids[0], window.word_ids[-1] + 1))
    for window in mine:
        for word, index in zip(window.word_ids, window.word_piece_index, strict=True):
            assert window.input_ids[index] == alignment.piece_ids[alignment.label_pieces[word]]
    # Consecutive windows overlap (stride > 0) and leave no gap.
    for before, after in zip(mine, mine[1:], strict=False):
        assert after.word_ids[0] <= before.word_ids[-1]
        assert after.word_ids[0] > before.word_ids[0]
    # Each word is kept exactly once, from the window where it is most central.
    kept: dict[int, tuple[int, float]] = {}
    for window in mine:
        for position, (word, keep) in enumerate(zip(window.word_ids, window.keep, strict=True)):
            if keep:
                assert word not in kept
                kept[word] = (position, _context_score(window, position, *affix_sizes, 500))
    for window in mine:
        for position, word in enumerate(window.word_ids):
            assert _context_score(window, position, *affix_sizes, 500) <= kept[word][1]
    assert sorted(kept) == list(range(500))
    # Merging in shuffled window order still puts every prediction at its word.
    preds = [[(w.sentence_index, word) for word in w.word_ids] for w in windows]
    order = list(range(len(windows)))
    random.Random(7).shuffle(order)
    merged = merge_windows(
        [windows[i] for i in order], [preds[i] for i in order], 3, [len(s) for s in sentences]
    )
    assert merged == [[(i, j) for j in range(len(s))] for i, s in enumerate(sentences)]


def test_word_longer_than_a_window_keeps_its_label_piece(tokenizer: Any) -> None:
    rng = random.Random(3)
    huge = "".join(rng.choice("bcdfghjklmnpqrstvwxz") for _ in range(300))
    sentence = ["antes", huge, "después"]
    for label_piece in ("first", "last"):
        windows = encode_sentences(tokenizer, [sentence], 16, stride=4, label_piece=label_piece)
        alignment = align_sentences(tokenizer, [sentence], label_piece=label_piece)[0]
        assert all(len(w.input_ids) <= 16 for w in windows)
        for window in windows:
            for word, index in zip(window.word_ids, window.word_piece_index, strict=True):
                assert window.input_ids[index] == alignment.piece_ids[alignment.label_pieces[word]]
        merged = merge_windows(windows, [w.word_ids for w in windows], 1, [3])
        assert merged == [[0, 1, 2]]


def test_empty_sentence_gets_no_window_and_merges_empty(tokenizer: Any) -> None:
    windows = encode_sentences(tokenizer, [[], ["hola"], []])
    assert [w.sentence_index for w in windows] == [1]
    assert merge_windows(windows, [["B-LOC"]], 3, [0, 1, 0]) == [[], ["B-LOC"], []]


# --------------------------------------------------------------------------- tensors


def test_collate_pads_and_gather_picks_label_pieces(tokenizer: Any, conll_sample: Any) -> None:
    sentences = [["el", "museo", "del", "prado"], ["hola"], _long_sentence(conll_sample, 60)]
    labels = [[1, 2, 3, 4], [5], list(range(60))]
    windows = encode_sentences(tokenizer, sentences, max_length=24, stride=6)
    pad_id = tokenizer.pad_token_id
    batch = collate(windows, pad_id, sentence_labels=labels, label_pad=-100)
    n_pieces = max(len(w.input_ids) for w in windows)
    n_words = max(len(w.word_ids) for w in windows)
    assert batch.input_ids.shape == batch.attention_mask.shape == (len(windows), n_pieces)
    assert batch.word_index.shape == batch.word_mask.shape == (len(windows), n_words)
    assert batch.word_mask.dtype == torch.bool
    assert batch.labels is not None
    for row, window in enumerate(windows):
        length = len(window.input_ids)
        assert batch.input_ids[row, :length].tolist() == window.input_ids
        assert (batch.input_ids[row, length:] == pad_id).all()
        assert batch.attention_mask[row].sum().item() == length
        mask = batch.word_mask[row].tolist()
        assert mask == [True] * len(window.word_ids) + [False] * (n_words - len(window.word_ids))
        expected = [labels[window.sentence_index][w] for w in window.word_ids]
        assert batch.labels[row, : len(expected)].tolist() == expected
        assert (batch.labels[row, len(expected) :] == -100).all()
    # Piece p carries the value p, so each gathered word shows which piece it came from.
    hidden = torch.arange(n_pieces, dtype=torch.float).view(1, -1, 1).expand(len(windows), -1, 3)
    words = gather_words(hidden, batch.word_index)  # shape: (batch, words, 3)
    assert words.shape == (len(windows), n_words, 3)
    assert torch.equal(words[..., 0].long(), batch.word_index)


def test_tiny_encoder_end_to_end(tiny_bert_dir: Path, conll_sample: Any) -> None:
    folder = tiny_bert_dir
    tokenizer = load_tokenizer(str(folder))
    model = load_encoder(str(folder)).eval()
    sentences = [["el", "museo", "del", "prado"], _long_sentence(conll_sample, 40)]
    windows = encode_sentences(tokenizer, sentences, max_length=20, stride=4)
    batch = collate(windows, tokenizer.pad_token_id)
    with torch.no_grad():
        hidden = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)[0]
    words = gather_words(hidden, batch.word_index)
    assert words.shape == (len(windows), batch.word_mask.shape[1], 32)
    # shape: (windows, words); any per-word value will do as a stand-in prediction.
    scores = words[..., 0]
    preds = [scores[row, : len(w.word_ids)].tolist() for row, w in enumerate(windows)]
    merged = merge_windows(windows, preds, 2, [4, 40])
    assert [len(s) for s in merged] == [4, 40]


# --------------------------------------------------------------------------- errors


def test_invalid_arguments_raise_clear_errors(tokenizer: Any) -> None:
    with pytest.raises(ValueError, match="label_piece"):
        encode_sentences(tokenizer, [["a"]], label_piece="middle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_length"):
        encode_sentences(tokenizer, [["a"]], max_length=2, stride=0)
    with pytest.raises(ValueError, match="stride"):
        encode_sentences(tokenizer, [["a"]], max_length=32, stride=30)
    with pytest.raises(ValueError, match="join"):
        encode_sentences(tokenizer, [["a"]], join="none")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sequence of words"):
        align_sentences(tokenizer, ["una frase"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="empty"):
        collate([], pad_id=0)
    with pytest.raises(ValueError, match="hidden"):
        gather_words(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long))


def test_slow_tokenizer_is_rejected() -> None:
    class Slow:
        is_fast = False

    with pytest.raises(ValueError, match="fast"):
        align_sentences(Slow(), [["a"]])


def test_merge_windows_checks_coverage() -> None:
    window = EncodedWindow(0, [0, 5, 6, 2], [1, 2], [0, 1], [True, True])
    assert merge_windows([window], [["O", "B-PER"]], 1, [2]) == [["O", "B-PER"]]
    with pytest.raises(ValueError, match="predictions"):
        merge_windows([window], [["O"]], 1, [2])
    with pytest.raises(ValueError, match="no kept prediction"):
        merge_windows([window], [["O", "O"]], 1, [3])
    with pytest.raises(ValueError, match="two windows"):
        merge_windows([window, window], [["O", "O"], ["O", "O"]], 1, [2])
    with pytest.raises(ValueError, match="lengths"):
        merge_windows([window], [["O", "O"]], 2, [2])
