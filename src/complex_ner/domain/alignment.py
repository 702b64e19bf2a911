"""Align MultiCoNER words with the sub-word pieces of a fast (Rust) HuggingFace tokenizer.

The CRF runs over words. For each word exactly one piece carries its representation and label
(``label_piece="first"`` or ``"last"``); :func:`gather_words` collects those pieces into a
word-level tensor, so the word mask is a prefix mask (what pytorch-crf needs).

How words become pieces
    The words of a sentence are joined into one text, tokenized once with
    ``return_offsets_mapping=True``, and each piece is mapped back to the word(s) whose characters
    its offsets overlap. ``is_split_into_words=True`` is avoided: with the XLM-R SentencePiece
    tokenizer it turns every Chinese character into a bare ``▁`` plus the character.

    - ``join="space"`` (default) puts one space between all words. A piece then never spans two
      words. For Chinese every character becomes a bare ``▁`` piece plus the character.
    - ``join="natural"`` leaves out the space between two words when both sides of the boundary
      are CJK characters (:func:`complex_ner.core.lang.joins_without_space`; how Chinese is
      written, and what the encoder was trained on): fewer pieces, but a multi-character piece
      such as 北京 can span two words.
    - ``join="char"`` joins like ``"space"``, then gives every word written without spaces (a
      CJK character, punctuation mark or kana; :func:`complex_ner.core.lang.joins_without_space`)
      one piece per character: the vocabulary's un-prefixed piece of the character as the
      tokenizer normalises it (``北``, the form met inside running Chinese text), else its
      word-initial piece (``▁北``). A word with a character that has neither keeps its
      ``"space"`` pieces, as do Latin words and numbers, so they tokenize exactly as with
      ``"space"``. No bare ``▁`` pieces and no piece shared by two words. The rule depends on
      the characters, not on the language: Spanish text gives the same pieces under all three
      joins, apart from the rare CJK character in it.
    - Pieces with empty offsets (special tokens) carry no word. A standalone ``▁`` piece (or one
      covering only whitespace; its offsets may overlap the next piece) is used for a word only
      if the word has no other piece.
    - A piece that spans several words is assigned to each of them: the words share one
      representation and the CRF transitions tell B from I. Splitting the piece would change the
      tokenization the encoder was trained on.
    - A word the tokenizer drops entirely (control characters, an empty string; for uncased BERT
      also a lone combining accent) gets an inserted unknown-token piece at its place, so it
      keeps a position of its own; a tokenizer without an unknown token lends it the nearest
      word's label piece instead.

Long sentences
    An encoder window holds ``max_length`` pieces including special tokens. Longer sentences are
    split into windows over whole words, consecutive windows sharing about ``stride`` pieces of
    context. Each word's prediction is taken from the window where it is most central (the
    largest distance, in pieces, to a window edge that is not a sentence edge; ties go to the
    earlier window). Nothing is truncated; a single word longer than a window keeps only the
    pieces nearest its label piece.

How the joins compare on the data (pieces per word, windows, shared label pieces):
``docs/results.md``, section "Word-piece alignment".
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from complex_ner.core.config import JoinMode, LabelPiece
from complex_ner.core.lang import joins_without_space

__all__ = [
    "EncodedWindow",
    "PieceTokenizer",
    "WordAlignment",
    "align_sentences",
    "alignment_stats",
    "char_pieces",
    "encode_sentences",
    "join_words",
    "merge_windows",
    "pad_windows",
    "piece_tokenizer",
    "predict_windows",
]

T = TypeVar("T")

# SentencePiece's and byte-level BPE's word-start markers: a piece of only these is bare.
_SPACE_MARKERS = "\u2581\u0120 "
# SentencePiece's word-start marker: the prefix of a character's word-initial piece.
_METASPACE = "\u2581"
_JOINS = ("space", "natural", "char")


# --------------------------------------------------------------------------- the tokenizer


@dataclass(frozen=True)
class PieceTokenizer:
    """What alignment tokenizes with: a ``tokenizers.Tokenizer`` and the ids its JSON leaves out.

    A transformers fast tokenizer runs the same ``tokenizers.Tokenizer``
    (``backend_tokenizer``); the unknown and padding tokens are named in
    ``tokenizer_config.json`` rather than in ``tokenizer.json``, so they travel beside it
    (a saved tagger's ONNX export records them, see :mod:`complex_ner.engines.export`).

    Attributes:
        backend: The ``tokenizers.Tokenizer``.
        unk_id: The unknown token's id (None without one).
        pad_id: The padding id.
    """

    backend: Any
    unk_id: int | None
    pad_id: int


def piece_tokenizer(tokenizer: Any) -> PieceTokenizer:
    """A :class:`PieceTokenizer` for a transformers fast tokenizer (or the one given).

    Truncation and padding are switched off on the backend, as transformers does on every call
    that does not ask for them.

    Raises:
        ValueError: ``tokenizer`` is not a fast tokenizer (no offsets to align with).
    """
    if not isinstance(tokenizer, PieceTokenizer):
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None or not getattr(tokenizer, "is_fast", False):
            raise ValueError(
                f"{type(tokenizer).__name__} is not a fast tokenizer; alignment needs offsets"
            )
        pad = tokenizer.pad_token_id
        tokenizer = PieceTokenizer(backend, tokenizer.unk_token_id, int(pad or 0))
    if tokenizer.backend.truncation is not None:
        tokenizer.backend.no_truncation()
    if tokenizer.backend.padding is not None:
        tokenizer.backend.no_padding()
    return tokenizer


# --------------------------------------------------------------------------- words -> pieces


@dataclass(frozen=True)
class WordAlignment:
    """One sentence's text, its content pieces (no special tokens) and each word's pieces.

    Attributes:
        text: The words joined (see ``join``).
        word_spans: ``(start, end)`` character span of each word in ``text``.
        piece_ids: Content piece ids, including any inserted for dropped words.
        piece_offsets: ``(start, end)`` character span of each piece in ``text``.
        word_pieces: For each word, the indices (into ``piece_ids``) of all pieces overlapping it.
        label_pieces: For each word, the one piece index carrying its label.
        dropped_words: Words the tokenizer produced no piece for (see the module docstring).
    """

    text: str
    word_spans: list[tuple[int, int]]
    piece_ids: list[int]
    piece_offsets: list[tuple[int, int]]
    word_pieces: list[list[int]]
    label_pieces: list[int]
    dropped_words: list[int]


def join_words(words: Sequence[str], join: JoinMode = "space") -> tuple[str, list[tuple[int, int]]]:
    """Join words into one text; return it with each word's ``(start, end)`` character span.

    Args:
        words: The sentence's words.
        join: ``"space"`` and ``"char"``: one space between all words; ``"natural"``: none
            between two CJK characters.
    """
    if join not in _JOINS:
        raise ValueError(f"join must be 'space', 'natural' or 'char', got {join!r}")
    parts: list[str] = []
    spans: list[tuple[int, int]] = []
    position = 0
    for index, word in enumerate(words):
        if index and not (join == "natural" and joins_without_space(words[index - 1], word)):
            parts.append(" ")
            position += 1
        spans.append((position, position + len(word)))
        parts.append(word)
        position += len(word)
    return "".join(parts), spans


def _is_bare(token: str, covered: str) -> bool:
    """A piece that carries no word content: only a word-start marker, or only whitespace."""
    return not token.strip(_SPACE_MARKERS) or not covered.strip()


def _align_one(
    text: str,
    spans: list[tuple[int, int]],
    ids: list[int],
    offsets: list[tuple[int, int]],
    tokens: list[str],
    unk_id: int | None,
    label_piece: LabelPiece,
) -> WordAlignment:
    n_words = len(spans)
    char_word = [-1] * len(text)  # the word each character belongs to; -1 for separators
    for word, (start, end) in enumerate(spans):
        char_word[start:end] = [word] * (end - start)

    # Words and bareness of each tokenizer piece.
    piece_words: list[tuple[int, ...]] = []
    piece_bare: list[bool] = []
    for (start, end), token in zip(offsets, tokens, strict=True):
        end = min(end, len(text))
        words = sorted({char_word[c] for c in range(start, end) if char_word[c] >= 0})
        piece_words.append(tuple(words))
        piece_bare.append(_is_bare(token, text[start:end]))
    covered = {word for words in piece_words for word in words}
    dropped = [word for word in range(n_words) if word not in covered]

    # Final piece sequence, with an unknown-token piece inserted at each dropped word's place.
    out_ids: list[int] = []
    out_offsets: list[tuple[int, int]] = []
    out_words: list[tuple[int, ...]] = []
    out_bare: list[bool] = []
    pending = list(dropped) if unk_id is not None else []
    next_dropped = 0

    def insert_dropped_before(limit: int) -> None:
        nonlocal next_dropped
        while next_dropped < len(pending) and pending[next_dropped] < limit:
            word = pending[next_dropped]
            out_ids.append(unk_id)  # type: ignore[arg-type]  # pending is empty without one
            out_offsets.append(spans[word])
            out_words.append((word,))
            out_bare.append(False)
            next_dropped += 1

    for piece, words in enumerate(piece_words):
        if words:
            insert_dropped_before(words[0])
        out_ids.append(ids[piece])
        out_offsets.append((offsets[piece][0], offsets[piece][1]))
        out_words.append(words)
        out_bare.append(piece_bare[piece])
    insert_dropped_before(n_words)

    strong: list[list[int]] = [[] for _ in range(n_words)]
    bare: list[list[int]] = [[] for _ in range(n_words)]
    for piece, words in enumerate(out_words):
        for word in words:
            (bare if out_bare[piece] else strong)[word].append(piece)
    word_pieces: list[list[int]] = []
    label_pieces: list[int] = []
    for word in range(n_words):
        candidates = strong[word] or bare[word]
        word_pieces.append(sorted(strong[word] + bare[word]))
        if candidates:
            label_pieces.append(candidates[0] if label_piece == "first" else candidates[-1])
        else:
            label_pieces.append(-1)  # dropped and no unknown token: filled below

    # Without an unknown token, a dropped word borrows its nearest neighbour's label piece.
    for word in range(n_words):
        if label_pieces[word] < 0:
            neighbours = [w for w in (word - 1, word + 1) if 0 <= w < n_words]
            donor = next((label_pieces[w] for w in neighbours if label_pieces[w] >= 0), -1)
            if donor < 0:
                raise ValueError(f"cannot place word {word} of {text!r}: the tokenizer dropped it")
            label_pieces[word] = donor
            word_pieces[word] = [donor]
    return WordAlignment(
        text=text,
        word_spans=spans,
        piece_ids=out_ids,
        piece_offsets=out_offsets,
        word_pieces=word_pieces,
        label_pieces=label_pieces,
        dropped_words=dropped,
    )


def _written_without_space(word: str) -> bool:
    """Whether every character of ``word`` belongs to a script written without spaces."""
    # The rule lives in core.lang; a character "joins without space" with itself iff it is one.
    return bool(word) and all(joins_without_space(char, char) for char in word)


def char_pieces(tokenizer: Any, chars: Iterable[str]) -> dict[str, tuple[int, str] | None]:
    """The one piece ``join="char"`` gives each character: ``(id, piece)``, or None if none.

    The character is first normalised as the tokenizer normalises text (XLM-R maps the
    full-width comma ``，`` to ``,``): the raw character's own entry may exist in the vocabulary
    without ever having been produced, so its embedding would be untrained. The normalised form
    is looked up un-prefixed (``北``), then with the word-start marker (``▁北``).

    Args:
        tokenizer: A fast HuggingFace tokenizer or a :class:`PieceTokenizer`.
        chars: The characters (each looked up once).
    """
    pieces = piece_tokenizer(tokenizer)
    normalizer = pieces.backend.normalizer
    forms: dict[str, str | None] = {}
    for char in set(chars):
        # BERT's normaliser pads CJK characters with spaces; an inner space means several words.
        form = normalizer.normalize_str(char).strip() if normalizer is not None else char
        forms[char] = form if form and not any(c.isspace() for c in form) else None
    candidates = sorted({p for f in forms.values() if f for p in (f, _METASPACE + f)})
    found: dict[str, int] = {}
    for piece in candidates:
        piece_id = pieces.backend.token_to_id(piece)  # None for a piece not in the vocabulary
        if piece_id is not None and piece_id != pieces.unk_id:
            found[piece] = piece_id
    out: dict[str, tuple[int, str] | None] = {}
    for char, form in forms.items():
        choices = (form, _METASPACE + form) if form else ()
        out[char] = next(((found[p], p) for p in choices if p in found), None)
    return out


def _one_piece_per_char(
    words: Sequence[str],
    spans: list[tuple[int, int]],
    ids: list[int],
    offsets: list[tuple[int, int]],
    tokens: list[str],
    pieces: dict[str, tuple[int, str] | None],
) -> tuple[list[int], list[tuple[int, int]], list[str]]:
    """``join="char"``: swap the space-joined pieces of each word written without spaces for
    one piece per character (see the module docstring); other pieces are kept as they are."""
    swapped = [_written_without_space(w) and all(pieces.get(c) for c in w) for w in words]
    if not any(swapped):
        return ids, offsets, tokens
    starts = [start for start, _ in spans]
    todo = [word for word, flag in enumerate(swapped) if flag]
    out_ids: list[int] = []
    out_offsets: list[tuple[int, int]] = []
    out_tokens: list[str] = []
    done = 0

    def emit_before(limit: int) -> None:
        nonlocal done
        while done < len(todo) and todo[done] < limit:
            word = todo[done]
            start = spans[word][0]
            for index, char in enumerate(words[word]):
                piece_id, piece = pieces[char]  # type: ignore[misc]  # swapped: all found
                out_ids.append(piece_id)
                out_offsets.append((start + index, start + index + 1))
                out_tokens.append(piece)
            done += 1

    for piece_id, (start, end), token in zip(ids, offsets, tokens, strict=True):
        # The word a piece belongs to: the one holding its first character, else (a bare "▁"
        # on the separating space) the next word. Pieces never span two space-joined words.
        word = bisect_right(starts, start) - 1
        if word < 0 or start >= spans[word][1]:
            word += 1
        if word < len(words) and swapped[word]:
            emit_before(word + 1)
            continue
        emit_before(word)
        out_ids.append(piece_id)
        out_offsets.append((start, end))
        out_tokens.append(token)
    emit_before(len(words))
    return out_ids, out_offsets, out_tokens


def _check_label_piece(label_piece: str) -> None:
    if label_piece not in ("first", "last"):
        raise ValueError(f"label_piece must be 'first' or 'last', got {label_piece!r}")


def align_sentences(
    tokenizer: Any,
    sentences: Sequence[Sequence[str]],
    label_piece: LabelPiece = "first",
    join: JoinMode = "space",
) -> list[WordAlignment]:
    """Tokenize sentences (no special tokens, no truncation) and align pieces with words.

    Args:
        tokenizer: A fast HuggingFace tokenizer.
        sentences: Each sentence as its words.
        label_piece: Which of a word's pieces carries its label.
        join: How words are joined into text and pieces (see the module docstring).
    """
    pieces = piece_tokenizer(tokenizer)
    _check_label_piece(label_piece)
    for index, words in enumerate(sentences):
        if isinstance(words, str):
            raise ValueError(f"sentence {index} is a string; pass a sequence of words")
    if not sentences:
        return []
    joined = [join_words(words, join) for words in sentences]
    char_map: dict[str, tuple[int, str] | None] = {}
    if join == "char":
        chars = {c for words in sentences for w in words if _written_without_space(w) for c in w}
        char_map = char_pieces(pieces, chars)
    encodings = pieces.backend.encode_batch([text for text, _ in joined], add_special_tokens=False)
    alignments = []
    for words, (text, spans), encoding in zip(sentences, joined, encodings, strict=True):
        ids = list(encoding.ids)
        offsets = [(int(start), int(end)) for start, end in encoding.offsets]
        tokens = list(encoding.tokens)
        if join == "char":
            ids, offsets, tokens = _one_piece_per_char(words, spans, ids, offsets, tokens, char_map)
        alignments.append(_align_one(text, spans, ids, offsets, tokens, pieces.unk_id, label_piece))
    return alignments


# --------------------------------------------------------------------------- windows


@dataclass(frozen=True)
class EncodedWindow:
    """One encoder input: a span of a sentence's words with their pieces and special tokens.

    Attributes:
        sentence_index: Which input sentence.
        input_ids: Piece ids, with special tokens.
        word_piece_index: For each word in this window, the index (into ``input_ids``) of the
            piece carrying its label.
        word_ids: The sentence-level indices of those words (consecutive).
        keep: Whether this window's prediction is the one used for that word.
    """

    sentence_index: int
    input_ids: list[int]
    word_piece_index: list[int]
    word_ids: list[int]
    keep: list[bool]


def _special_affixes(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special-token ids a tokenizer (fast or :class:`PieceTokenizer`) puts before and after
    a single sequence."""
    encoding = piece_tokenizer(tokenizer).backend.encode("a", add_special_tokens=True)
    ids, special = list(encoding.ids), list(encoding.special_tokens_mask)
    if 0 not in special:
        raise ValueError("the tokenizer produced no content piece for 'a'")
    first = special.index(0)
    last = len(special) - 1 - special[::-1].index(0)
    return ids[:first], ids[last + 1 :]


def _word_piece_ranges(alignment: WordAlignment, budget: int) -> tuple[list[int], list[int]]:
    """Per word, the piece range ``[lo, hi)`` a window must hold, clipped to ``budget`` pieces
    around the label piece for words too long for any window."""
    lows, highs = [], []
    for pieces, label in zip(alignment.word_pieces, alignment.label_pieces, strict=True):
        low, high = min(pieces), max(pieces) + 1
        if high - low > budget:
            low = max(low, label - budget + 1)
            high = min(high, low + budget)
        lows.append(low)
        highs.append(high)
    return lows, highs


def _plan_windows(
    alignment: WordAlignment, budget: int, stride: int
) -> list[tuple[int, int, int, int]]:
    """``(word_start, word_end, piece_start, piece_end)`` of each window of one sentence."""
    n_words, n_pieces = len(alignment.word_spans), len(alignment.piece_ids)
    if n_pieces <= budget:
        return [(0, n_words, 0, n_pieces)]
    lows, highs = _word_piece_ranges(alignment, budget)
    windows = []
    start = 0
    while True:
        piece_lo, piece_hi, end = lows[start], highs[start], start + 1
        while end < n_words:
            lo, hi = min(piece_lo, lows[end]), max(piece_hi, highs[end])
            if hi - lo > budget:
                break
            piece_lo, piece_hi, end = lo, hi, end + 1
        windows.append((start, end, piece_lo, piece_hi))
        if end == n_words:
            return windows
        # Next window: from the first word within `stride` pieces of this window's end, so
        # consecutive windows share about `stride` pieces; always at least one word further.
        start = next(
            (w for w in range(start + 1, end) if lows[w] >= piece_hi - stride),
            end,
        )


def encode_sentences(
    tokenizer: Any,
    sentences: Sequence[Sequence[str]],
    max_length: int = 128,
    stride: int = 32,
    label_piece: LabelPiece = "first",
    join: JoinMode = "space",
) -> list[EncodedWindow]:
    """Encode sentences into encoder windows, in sentence order.

    A sentence that fits gives one window; a longer one gives overlapping windows (see the
    module docstring). An empty sentence gives no window (:func:`merge_windows` returns ``[]``
    for it).

    Args:
        tokenizer: A fast HuggingFace tokenizer.
        sentences: Each sentence as its words.
        max_length: Pieces per window, special tokens included.
        stride: Pieces of context shared by consecutive windows of a long sentence.
        label_piece: Which of a word's pieces carries its label.
        join: How words are joined into text (see :func:`join_words`).
    """
    pieces = piece_tokenizer(tokenizer)
    prefix, suffix = _special_affixes(pieces)
    budget = max_length - len(prefix) - len(suffix)
    if budget < 1:
        raise ValueError(
            f"max_length {max_length} leaves no room beside {len(prefix) + len(suffix)} "
            "special tokens"
        )
    if not 0 <= stride < budget:
        raise ValueError(
            f"stride must be in [0, {budget}) (max_length {max_length} minus special tokens), "
            f"got {stride}"
        )
    windows: list[EncodedWindow] = []
    alignments = align_sentences(pieces, sentences, label_piece=label_piece, join=join)
    for sentence_index, alignment in enumerate(alignments):
        n_words = len(alignment.word_spans)
        if n_words == 0:
            continue
        plans = _plan_windows(alignment, budget, stride)
        # Most central window per word: largest distance to an edge that is not a sentence edge.
        best: dict[int, tuple[float, int]] = {}
        for plan_index, (word_lo, word_hi, piece_lo, piece_hi) in enumerate(plans):
            for word in range(word_lo, word_hi):
                label = alignment.label_pieces[word]
                left = label - piece_lo if word_lo > 0 else math.inf
                right = piece_hi - 1 - label if word_hi < n_words else math.inf
                score = min(left, right)
                if word not in best or score > best[word][0]:
                    best[word] = (score, plan_index)
        for plan_index, (word_lo, word_hi, piece_lo, piece_hi) in enumerate(plans):
            words = list(range(word_lo, word_hi))
            windows.append(
                EncodedWindow(
                    sentence_index=sentence_index,
                    input_ids=prefix + alignment.piece_ids[piece_lo:piece_hi] + suffix,
                    word_piece_index=[
                        len(prefix) + alignment.label_pieces[w] - piece_lo for w in words
                    ],
                    word_ids=words,
                    keep=[best[w][1] == plan_index for w in words],
                )
            )
    return windows


def pad_windows(windows: Sequence[EncodedWindow], pad_id: int) -> dict[str, np.ndarray]:
    """Pad windows into the encoder's inputs (``domain.batch.collate`` makes them tensors).

    Args:
        windows: Windows from :func:`encode_sentences`, in any order.
        pad_id: The tokenizer's padding id (1 for XLM-R, 0 for BERT).

    Returns:
        ``input_ids`` and ``attention_mask`` (int64) of shape ``(batch, pieces)``,
        ``word_index`` (int64) and ``word_mask`` (bool) of shape ``(batch, words)``.

    Raises:
        ValueError: no windows, or a window without words.
    """
    if not windows:
        raise ValueError("cannot collate an empty list of windows")
    batch = len(windows)
    max_pieces = max(len(w.input_ids) for w in windows)
    max_words = max(len(w.word_ids) for w in windows)
    # shape: (batch, pieces)
    input_ids = np.full((batch, max_pieces), pad_id, dtype=np.int64)
    attention_mask = np.zeros((batch, max_pieces), dtype=np.int64)
    # shape: (batch, words)
    word_index = np.zeros((batch, max_words), dtype=np.int64)
    word_mask = np.zeros((batch, max_words), dtype=bool)
    for row, window in enumerate(windows):
        n_pieces, n_words = len(window.input_ids), len(window.word_ids)
        if n_words == 0:
            # pytorch-crf needs the first time step of every row unmasked.
            raise ValueError(f"window {row} (sentence {window.sentence_index}) has no words")
        input_ids[row, :n_pieces] = window.input_ids
        attention_mask[row, :n_pieces] = 1
        word_index[row, :n_words] = window.word_piece_index
        word_mask[row, :n_words] = True
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "word_index": word_index,
        "word_mask": word_mask,
    }


WindowDecoder = Callable[
    [Sequence[EncodedWindow], bool], tuple[list[list[int]], list[list[list[float]]] | None]
]


def predict_windows(
    windows: Sequence[EncodedWindow],
    sentence_lengths: Sequence[int],
    decode: WindowDecoder,
    batch_size: int,
    with_marginals: bool = False,
) -> tuple[list[list[int]], list[list[list[float]]] | None]:
    """Tag ids (and marginals) per word of every sentence, from batch-wise window decoding.

    Windows are sorted by length so batches carry little padding; ``decode(batch, marginals)``
    returns each window's tag ids and, when asked, its per-word marginals; the kept window of
    every word gives its prediction (:func:`merge_windows`).

    Raises:
        ValueError: ``batch_size`` below 1.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    order = sorted(range(len(windows)), key=lambda i: len(windows[i].input_ids))
    preds: list[list[int]] = [[] for _ in windows]
    margs: list[list[list[float]]] = [[] for _ in windows]
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        paths, probs = decode([windows[i] for i in idx], with_marginals)
        for row, i in enumerate(idx):
            preds[i] = paths[row]
            if probs is not None:
                margs[i] = probs[row]
    n = len(sentence_lengths)
    merged = merge_windows(windows, preds, n, sentence_lengths)
    merged_m = merge_windows(windows, margs, n, sentence_lengths) if with_marginals else None
    return merged, merged_m


def merge_windows(
    windows: Sequence[EncodedWindow],
    window_preds: Sequence[Sequence[T]],
    num_sentences: int,
    sentence_lengths: Sequence[int],
) -> list[list[T]]:
    """Put window-level predictions back into sentences, one per word, in word order.

    Args:
        windows: The windows, in any order.
        window_preds: For each window, one prediction per word (``len(window.word_ids)``).
        num_sentences: How many sentences were encoded.
        sentence_lengths: Number of words of each sentence.

    Raises:
        ValueError: If counts disagree or a word gets no or several kept predictions.
    """
    if len(windows) != len(window_preds):
        raise ValueError(f"{len(windows)} windows but {len(window_preds)} prediction lists")
    if len(sentence_lengths) != num_sentences:
        raise ValueError(f"{num_sentences} sentences but {len(sentence_lengths)} lengths")
    merged: list[list[Any]] = [[None] * length for length in sentence_lengths]
    filled: list[list[bool]] = [[False] * length for length in sentence_lengths]
    for number, (window, preds) in enumerate(zip(windows, window_preds, strict=True)):
        if len(preds) != len(window.word_ids):
            raise ValueError(
                f"window {number} has {len(window.word_ids)} words but {len(preds)} predictions"
            )
        if not 0 <= window.sentence_index < num_sentences:
            raise ValueError(f"window {number} names sentence {window.sentence_index}")
        sentence = window.sentence_index
        for word, keep, pred in zip(window.word_ids, window.keep, preds, strict=True):
            if not keep:
                continue
            if word >= sentence_lengths[sentence]:
                raise ValueError(f"window {number} names word {word} beyond sentence {sentence}")
            if filled[sentence][word]:
                raise ValueError(f"word {word} of sentence {sentence} is kept by two windows")
            merged[sentence][word] = pred
            filled[sentence][word] = True
    for sentence, flags in enumerate(filled):
        if not all(flags):
            raise ValueError(
                f"sentence {sentence}: word {flags.index(False)} has no kept prediction"
            )
    return merged


# --------------------------------------------------------------------------- measurement


def alignment_stats(
    tokenizer: Any,
    sentences: Sequence[Sequence[str]],
    max_length: int = 128,
    stride: int = 32,
    join: JoinMode = "space",
) -> dict[str, float]:
    """Numbers behind the module docstring's table: pieces per word, shared and dropped words,
    windows needed."""
    alignments = align_sentences(tokenizer, sentences, join=join)
    windows = encode_sentences(tokenizer, sentences, max_length, stride, join=join)
    n_words = sum(len(a.word_spans) for a in alignments)
    shared = 0
    for alignment in alignments:
        owners: dict[int, int] = {}
        for piece in alignment.label_pieces:
            owners[piece] = owners.get(piece, 0) + 1
        shared += sum(owners[piece] > 1 for piece in alignment.label_pieces)
    per_sentence: dict[int, int] = {}
    for window in windows:
        per_sentence[window.sentence_index] = per_sentence.get(window.sentence_index, 0) + 1
    return {
        "sentences": len(sentences),
        "words": n_words,
        "pieces": sum(len(a.piece_ids) for a in alignments),
        "pieces_per_word": sum(len(a.piece_ids) for a in alignments) / max(n_words, 1),
        "words_sharing_label_piece": shared,
        "dropped_words": sum(len(a.dropped_words) for a in alignments),
        "max_pieces": max((len(a.piece_ids) for a in alignments), default=0),
        "windows": len(windows),
        "sentences_over_one_window": sum(count > 1 for count in per_sentence.values()),
    }
