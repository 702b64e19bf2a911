"""Whole-word-masking (WWM) continued pre-training of the encoder on the NER training text.

The SemEval paper's encoders were pre-trained with whole word masking (for Chinese, words found
by word segmentation). ``complex-ner pretrain --lang <lang>`` adapts ``model.encoder`` to one
language's MultiCoNER text the same way and writes a standard HuggingFace encoder folder to
``<pretrain.output_dir>/<lang>``; with ``pretrain.enabled: true`` training starts from it.

Corpus
    The language's training sentences (text only, ``data/processed/<lang>/train.conll``) plus the
    lines of ``pretrain.extra_text_files`` (plain text, one sentence per line), split into words
    with :func:`complex_ner.engines.predict.tokenize` and lowercased like prediction input
    (:func:`complex_ner.engines.predict.model_words`). ``pretrain.max_sentences`` caps the total, training
    sentences first. The words are joined (``model.join``) and tokenized exactly as fine-tuning
    does (:func:`complex_ner.domain.alignment.align_sentences`), so the encoder is adapted to the inputs
    it will see; a sentence longer than ``pretrain.max_length`` pieces is cut between words.

Words (the masking units)
    - Space-separated languages (Spanish): the MultiCoNER tokens, punctuation marks included.
    - Chinese: MultiCoNER has one token per character, so words come from a segmenter run over
      the characters of each sentence (joined without spaces between CJK characters): the
      characters of one segmenter word form one unit; a token is never split.
    - Pieces map to words through the offsets mapping; a bare ``▁`` piece belongs to the
      following word; when one piece overlaps two words (``model.join: natural``) the two words
      become one unit, so a masked unit never shares a piece with an unmasked one.

    Segmenter: ``jieba==0.42.1``. It is pure Python, its prefix dictionary ships inside the
    wheel (nothing is downloaded, which matters offline and in CI), it initialises in about 1.5 s
    and segments thousands of sentences per second, and it is deterministic (dictionary DAG plus
    an HMM for unknown words such as transliterated names). HFL's Chinese-BERT-wwm used LTP,
    which is more accurate on news text but needs a neural model download and a forward pass per
    sentence; pkuseg needs compiled extensions and downloaded domain models; THULAC needs model
    files too. For masking, plausible word units matter more than the last point of
    segmentation F1, so jieba (the most widely used Chinese segmenter on PyPI) is used.

Masking (:func:`wwm_mask`)
    In every example ``round(mask_fraction * words)`` words, at least one, are chosen with a
    seeded generator; all pieces of a chosen word are predicted. Each chosen word is replaced as
    a whole: 80% by ``<mask>``, 10% by random tokens (never special tokens), 10% left unchanged.
    (Google's WWM code draws 80/10/10 per piece; per word avoids half-masked words that give
    their own answer away.) Masks are redrawn every epoch (dynamic masking) from a generator
    seeded by ``(seed, epoch)``, so a run is reproducible.

Model
    A checkpoint with an MLM head is loaded with ``AutoModelForMaskedLM``. One without (the
    default multilingual-e5-small is a bare ``BertModel``) gets a fresh head: the MLM model is
    built from the encoder's config, the encoder weights are loaded into its base model, and the
    head's decoder is tied to the input embeddings (checked). The loss is computed only on the
    predicted positions: their hidden states are gathered before the head, so the 250k-row
    decoder runs on ~15% of the pieces. AdamW (``pretrain.lr``, weight decay 0.01 except biases
    and norms), 6% linear warm-up then linear decay to 0, gradient clipping at 1.0, length-bucketed
    batches in a seeded order; device and precision follow ``train.device``/``train.precision``.

Output
    ``<output_dir>/<lang>`` holds the adapted encoder without the MLM head (``config.json``,
    ``model.safetensors``), the tokenizer and ``pretrain.json`` (corpus size, masking statistics,
    loss, seconds), written in a folder beside it and renamed into place. With pretraining
    disabled the command only writes a ``SKIPPED`` marker there (DVC needs the stage's output).
    Each run is tracked in MLflow as ``pretrain-<lang>`` (nested under
    ``$COMPLEX_NER_PARENT_RUN_ID`` when set): loss and learning rate per step, corpus and masking
    statistics.

Measured (e5 tokenizer, ``join: space``, ``data/processed`` train files, one masking pass)
    ====  =========  =======  =======  =======  =======  =======  ============
    lang  sentences  tokens   words    pieces   masked   masked   80/10/10 (%)
                                                words    pieces
    ====  =========  =======  =======  =======  =======  =======  ============
    es    13,770     240,259  240,259  336,465  15.1%    15.1%    80.3/9.9/9.8
    zh    2,219      55,134   33,872   103,868  15.2%    15.2%    80.1/10.4/9.6
    ====  =========  =======  =======  =======  =======  =======  ============

    Tokens are MultiCoNER's (characters for Chinese), words the masking units (jieba words
    for Chinese), pieces the content pieces without special tokens.

    Building the corpus takes 13 s (es) and 6 s (zh, with jieba's start-up); no sentence
    exceeds 128 pieces (longest 112 and 118). One optimiser step of the e5 encoder (118M
    parameters, 96M of them the tied embedding/decoder), batch 16 x 27 pieces, 64 predicted,
    on the development machine (2 CPU cores, one busy with another job), ``torch`` 1 thread:

    =========================================================  ===========
    loss                                                       s per step
    =========================================================  ===========
    head on the predicted positions only (this module)         4.4-5.2
    full-vocabulary logits at every position (HF ``labels=``)  9.4-9.6
    predicted positions only, embeddings (= decoder) frozen    1.8-2.0
    =========================================================  ===========

    With 2 threads while the other core was busy a step took about 16 s (threads spinning on a
    shared core): set ``train.threads: 1`` on a shared machine. Of a 4.2-5.2 s step the encoder
    forward is about 0.5 s, the head 0.5 s, backward 2.1 s, clipping plus AdamW 1.1-2 s. One
    epoch is 861 steps (es) and 139 (zh) at batch 16: about an hour for es on this CPU, a job
    for a GPU.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from complex_ner.core.config import Params
from complex_ner.core.paths import PRETRAIN_RESULT_FILE, SKIP_MARKER, pretrained_encoder_dir

__all__ = [
    "IGNORE_INDEX",
    "SKIP_MARKER",
    "CorpusStats",
    "MaskStats",
    "MaskingVocab",
    "PretrainExample",
    "PretrainResult",
    "build_corpus",
    "collate_masked",
    "corpus_sentences",
    "encode_examples",
    "has_mlm_head",
    "load_mlm_model",
    "masked_lm_loss",
    "masking_vocab",
    "pretrain_encoder",
    "pretrain_tracked",
    "pretrained_encoder",
    "pretrained_encoder_dir",
    "run_pretrain",
    "word_groups",
    "write_skip_marker",
    "wwm_mask",
]

IGNORE_INDEX = -100
"""Label of a piece that is not predicted (PyTorch's cross-entropy ignore index)."""

"""File written instead of an encoder when ``pretrain.enabled`` is false."""

SEGMENTER = "jieba==0.42.1"
_WARMUP_FRACTION = 0.06  # RoBERTa's warm-up share
_WEIGHT_DECAY = 0.01
_CLIP_NORM = 1.0
_LOG_FLUSH = 200  # steps of metrics buffered before one MLflow write
_SEGMENTED_LANGUAGES = frozenset({"zh"})

StepCallback = Callable[[dict[str, float]], None]


# --------------------------------------------------------------------------- words


_JIEBA: Any = None
_JIEBA_LOCK = threading.Lock()


def _jieba() -> Any:
    """One quiet, initialised jieba tokenizer per process (its dictionary ships in the wheel)."""
    global _JIEBA
    with _JIEBA_LOCK:
        if _JIEBA is None:
            import jieba

            jieba.setLogLevel(logging.WARNING)
            tokenizer = jieba.Tokenizer()
            tokenizer.initialize()
            _JIEBA = tokenizer
    return _JIEBA


def word_groups(tokens: Sequence[str], lang: str) -> list[int]:
    """The masking word of each token: consecutive tokens of one word share a number.

    Space-separated languages: every token is its own word. Chinese: the tokens (characters)
    are joined without spaces between CJK characters and segmented with jieba; a token belongs
    to the jieba word its first character starts in, so a token is never split.

    Returns:
        One non-decreasing group number per token, starting at 0.
    """
    if lang not in _SEGMENTED_LANGUAGES:
        return list(range(len(tokens)))
    from complex_ner.domain.alignment import join_words

    text, spans = join_words(tokens, "natural")
    starts = {start for _word, start, _end in _jieba().tokenize(text)}
    groups: list[int] = []
    for index, (start, _end) in enumerate(spans):
        if index == 0:
            groups.append(0)
        else:
            groups.append(groups[-1] + (1 if start in starts else 0))
    return groups


# --------------------------------------------------------------------------- masking


@dataclass(frozen=True)
class MaskingVocab:
    """What masking needs from a tokenizer: the mask id and the ids random tokens come from."""

    mask_id: int
    vocab_size: int
    special_ids: frozenset[int]

    def random_id(self, rng: np.random.Generator) -> int:
        """A uniformly drawn id that is not a special token."""
        while True:
            candidate = int(rng.integers(0, self.vocab_size))
            if candidate not in self.special_ids:
                return candidate


def masking_vocab(tokenizer: Any) -> MaskingVocab:
    """The :class:`MaskingVocab` of a HuggingFace tokenizer (it must have a mask token)."""
    if isinstance(tokenizer, MaskingVocab):
        return tokenizer
    if tokenizer.mask_token_id is None:
        raise ValueError(f"{type(tokenizer).__name__} has no mask token; WWM needs one")
    special = frozenset(int(i) for i in tokenizer.all_special_ids)
    size = len(tokenizer)
    if len(special) >= size:
        raise ValueError("the tokenizer has no non-special token to draw random tokens from")
    return MaskingVocab(int(tokenizer.mask_token_id), size, special)


@dataclass
class MaskStats:
    """Counts of masking decisions; add them up over batches with ``+=``."""

    words: int = 0
    pieces: int = 0
    masked_words: int = 0
    masked_pieces: int = 0
    mask_words: int = 0  # replaced by <mask> (80%)
    random_words: int = 0  # replaced by random tokens (10%)
    kept_words: int = 0  # left unchanged but predicted (10%)
    mask_pieces: int = 0
    random_pieces: int = 0
    kept_pieces: int = 0

    def __iadd__(self, other: MaskStats) -> MaskStats:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    def summary(self) -> dict[str, float]:
        """Counts plus the shares of words and pieces masked and the 80/10/10 split."""
        out: dict[str, float] = {k: float(v) for k, v in asdict(self).items()}
        out["masked_word_share"] = self.masked_words / max(1, self.words)
        out["masked_piece_share"] = self.masked_pieces / max(1, self.pieces)
        for kind in ("mask", "random", "kept"):
            out[f"{kind}_word_share"] = getattr(self, f"{kind}_words") / max(1, self.masked_words)
        return out


def wwm_mask(
    input_ids: Sequence[int],
    word_ids: Sequence[int | None],
    tokenizer: Any,
    mask_fraction: float,
    rng: np.random.Generator,
) -> tuple[list[int], list[int], MaskStats]:
    """Whole-word masking of one example.

    Args:
        input_ids: Piece ids, special tokens included.
        word_ids: The word of each piece (any hashable number), None for special tokens; all
            pieces of a word are masked together.
        tokenizer: A HuggingFace tokenizer or a :class:`MaskingVocab`.
        mask_fraction: Share of words chosen (rounded; at least one when there is a word).
        rng: The generator every random choice is drawn from (seed it for reproducibility).

    Returns:
        ``(masked_ids, labels, stats)``: the ids with chosen words replaced (80% ``<mask>``,
        10% random non-special tokens, 10% unchanged, decided per word), the original id at
        every piece of a chosen word and :data:`IGNORE_INDEX` elsewhere, and the counts.
    """
    if len(input_ids) != len(word_ids):
        raise ValueError(f"{len(input_ids)} ids but {len(word_ids)} word ids")
    if not 0.0 < mask_fraction < 1.0:
        raise ValueError(f"mask_fraction must be in (0, 1), got {mask_fraction}")
    vocab = masking_vocab(tokenizer)
    pieces_of: dict[int, list[int]] = {}
    for position, word in enumerate(word_ids):
        if word is not None:
            pieces_of.setdefault(word, []).append(position)
    words = list(pieces_of)  # in order of first piece
    masked = [int(i) for i in input_ids]
    labels = [IGNORE_INDEX] * len(masked)
    stats = MaskStats(words=len(words), pieces=sum(len(p) for p in pieces_of.values()))
    if not words:
        return masked, labels, stats
    count = min(len(words), max(1, round(mask_fraction * len(words))))
    chosen = sorted(int(i) for i in rng.choice(len(words), size=count, replace=False))
    for index in chosen:
        positions = pieces_of[words[index]]
        draw = rng.random()
        kind = "mask" if draw < 0.8 else "random" if draw < 0.9 else "kept"
        for position in positions:
            labels[position] = masked[position]
            if kind == "mask":
                masked[position] = vocab.mask_id
            elif kind == "random":
                masked[position] = vocab.random_id(rng)
        stats.masked_words += 1
        stats.masked_pieces += len(positions)
        setattr(stats, f"{kind}_words", getattr(stats, f"{kind}_words") + 1)
        setattr(stats, f"{kind}_pieces", getattr(stats, f"{kind}_pieces") + len(positions))
    return masked, labels, stats


# --------------------------------------------------------------------------- corpus


@dataclass(frozen=True)
class PretrainExample:
    """One encoder input: piece ids with special tokens and each piece's word (None: special)."""

    input_ids: list[int]
    word_ids: list[int | None]


@dataclass
class CorpusStats:
    """Size of a pretraining corpus."""

    sentences: int = 0
    train_sentences: int = 0
    extra_sentences: int = 0
    tokens: int = 0  # MultiCoNER tokens (characters for Chinese)
    words: int = 0  # masking units (jieba words for Chinese)
    pieces: int = 0  # content pieces, special tokens excluded
    examples: int = 0  # encoder inputs (a long sentence gives several)
    split_sentences: int = 0


class _Units:
    """Union-find over word numbers (words sharing a piece become one masking unit)."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _piece_units(word_pieces: Sequence[Sequence[int]], groups: Sequence[int], n: int) -> list[int]:
    """The masking unit of each content piece, numbered 0.. in order of appearance."""
    owners: list[set[int]] = [set() for _ in range(n)]
    for word, pieces in enumerate(word_pieces):
        for piece in pieces:
            owners[piece].add(groups[word])
    # A piece no word claims (a bare "▁" over a separator) belongs to the following word.
    for piece in range(n - 1, -1, -1):
        if not owners[piece]:
            later = next((owners[p] for p in range(piece + 1, n) if owners[p]), None)
            earlier = next((owners[p] for p in range(piece - 1, -1, -1) if owners[p]), None)
            source = later if later is not None else earlier
            owners[piece] = set(source) if source is not None else {-1}
    units = _Units()
    for owner in owners:
        first, *rest = sorted(owner)
        for other in rest:
            units.union(first, other)
    numbers: dict[int, int] = {}
    out = []
    for owner in owners:
        root = units.find(min(owner))
        out.append(numbers.setdefault(root, len(numbers)))
    return out


def _chunks(units: Sequence[int], budget: int) -> list[tuple[int, int]]:
    """Cut a piece sequence into ``[lo, hi)`` ranges of at most ``budget`` pieces, between
    units where possible (a unit longer than ``budget`` is cut)."""
    n = len(units)
    if n <= budget:
        return [(0, n)]
    out, lo = [], 0
    while lo < n:
        hi = min(n, lo + budget)
        if hi < n:
            cut = hi
            while cut > lo and units[cut - 1] == units[cut]:
                cut -= 1
            hi = cut if cut > lo else hi
        out.append((lo, hi))
        lo = hi
    return out


def encode_examples(
    tokenizer: Any,
    sentences: Sequence[Sequence[str]],
    lang: str,
    max_length: int = 128,
    join: str = "space",
    stats: CorpusStats | None = None,
) -> list[PretrainExample]:
    """Tokenize sentences (as fine-tuning does) into examples with a word per piece.

    Args:
        tokenizer: A fast HuggingFace tokenizer.
        sentences: Each sentence as its MultiCoNER tokens.
        lang: Picks the word definition (see :func:`word_groups`).
        max_length: Pieces per example, special tokens included.
        join: ``model.join`` (see :func:`complex_ner.domain.alignment.join_words`).
        stats: Updated with token, word, piece and example counts when given.
    """
    from complex_ner.domain.alignment import _special_affixes, align_sentences

    prefix, suffix = _special_affixes(tokenizer)
    budget = max_length - len(prefix) - len(suffix)
    if budget < 1:
        raise ValueError(f"max_length {max_length} leaves no room beside the special tokens")
    kept = [list(s) for s in sentences if len(s)]
    alignments = align_sentences(tokenizer, kept, join=join)  # type: ignore[arg-type]
    examples: list[PretrainExample] = []
    for tokens, alignment in zip(kept, alignments, strict=True):
        groups = word_groups(tokens, lang)
        units = _piece_units(alignment.word_pieces, groups, len(alignment.piece_ids))
        ranges = _chunks(units, budget)
        if stats is not None:
            stats.tokens += len(tokens)
            stats.words += len(set(units))
            stats.pieces += len(units)
            stats.split_sentences += len(ranges) > 1
        for lo, hi in ranges:
            local: dict[int, int] = {}
            word_ids: list[int | None] = [None] * len(prefix)
            word_ids += [local.setdefault(u, len(local)) for u in units[lo:hi]]
            word_ids += [None] * len(suffix)
            ids = prefix + alignment.piece_ids[lo:hi] + suffix
            examples.append(PretrainExample(input_ids=ids, word_ids=word_ids))
    if stats is not None:
        stats.examples += len(examples)
    return examples


def _read_text_lines(path: Path, lang: str) -> list[list[str]]:
    from complex_ner.engines.predict import model_words, tokenize

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise OSError(f"{path}: cannot read pretrain.extra_text_files entry: {exc}") from exc
    return [w for w in (model_words(tokenize(line, lang), lang) for line in text.splitlines()) if w]


def corpus_sentences(params: Params, lang: str) -> tuple[list[list[str]], CorpusStats]:
    """The training sentences' tokens of ``lang`` plus the extra text files, capped."""
    from complex_ner.domain.data import read_conll

    train = params.path(params.split.processed_dir) / lang / "train.conll"
    sentences = [list(s.tokens) for s in read_conll(train, labeled=False) if s.tokens]
    n_train = len(sentences)
    for name in params.pretrain.extra_text_files:
        sentences += _read_text_lines(params.path(name), lang)
    cap = params.pretrain.max_sentences
    if cap:
        sentences = sentences[:cap]
    stats = CorpusStats(
        sentences=len(sentences),
        train_sentences=min(n_train, len(sentences)),
        extra_sentences=max(0, len(sentences) - n_train),
    )
    return sentences, stats


def build_corpus(
    params: Params, lang: str, tokenizer: Any
) -> tuple[list[PretrainExample], CorpusStats]:
    """The examples of ``lang``'s pretraining corpus and its size (see the module docstring)."""
    sentences, stats = corpus_sentences(params, lang)
    if not sentences:
        raise ValueError(f"no {lang} sentences to pretrain on")
    examples = encode_examples(
        tokenizer, sentences, lang, params.pretrain.max_length, params.model.join, stats
    )
    return examples, stats


def collate_masked(
    rows: Sequence[tuple[list[int], list[int]]], pad_id: int
) -> tuple[Any, Any, Any]:
    """Pad ``(masked_ids, labels)`` rows into ``input_ids``, ``attention_mask``, ``labels``."""
    import torch

    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for row, (ids, labs) in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention[row, : len(ids)] = 1
        labels[row, : len(labs)] = torch.tensor(labs, dtype=torch.long)
    return input_ids, attention, labels


# --------------------------------------------------------------------------- model


_HEAD_PREFIXES = (
    "cls.predictions.",
    "lm_head.",
    "predictions.",
    "generator_lm_head.",
    "vocab_projector.",
)


def _checkpoint_keys(folder: Path) -> list[str] | None:
    """Weight names of a local safetensors checkpoint (None when there is none to read)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return list(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}))
    single = folder / "model.safetensors"
    if not single.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(single), framework="pt") as handle:
        return list(handle.keys())


def has_mlm_head(name_or_path: str) -> bool:
    """Whether a checkpoint carries masked-LM head weights (a bare encoder does not)."""
    folder = Path(name_or_path)
    if folder.is_dir():
        keys = _checkpoint_keys(folder)
        if keys is not None:
            return any(k.startswith(_HEAD_PREFIXES) for k in keys)
    from transformers import AutoConfig

    architectures = AutoConfig.from_pretrained(name_or_path).architectures or []
    return any(a.endswith(("ForMaskedLM", "ForPreTraining")) for a in architectures)


def _mlm_head(model: Any) -> Any | None:
    """The head module applied to the base model's hidden states, if the model has just one."""
    prefix = model.base_model_prefix
    heads = [child for name, child in model.named_children() if name != prefix]
    return heads[0] if len(heads) == 1 else None


def load_mlm_model(name_or_path: str, seed: int = 13) -> tuple[Any, bool]:
    """A masked-LM model of the encoder ``name_or_path``.

    Returns:
        ``(model, fresh_head)``: with the checkpoint's own head, or (``fresh_head`` True) a new
        head, initialised from ``seed``, whose decoder is tied to the input embeddings.

    Raises:
        ValueError: The fresh head could not be tied to the input embeddings.
    """
    import torch
    from transformers import AutoConfig, AutoModelForMaskedLM
    from transformers.utils import logging as hf_logging

    from complex_ner.domain.encoders import load_encoder

    hf_logging.disable_progress_bar()
    if has_mlm_head(name_or_path):
        model = AutoModelForMaskedLM.from_pretrained(name_or_path, use_safetensors=True)
        return model, False
    config = AutoConfig.from_pretrained(name_or_path)
    config.tie_word_embeddings = True
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForMaskedLM.from_config(config)
    encoder = load_encoder(name_or_path)
    model.base_model.load_state_dict(encoder.state_dict(), strict=True)
    del encoder
    model.tie_weights()
    output, inputs = model.get_output_embeddings(), model.get_input_embeddings()
    if output is None or output.weight is not inputs.weight:
        raise ValueError(f"could not tie the fresh MLM decoder of {name_or_path} to its embeddings")
    return model, True


def masked_lm_loss(model: Any, input_ids: Any, attention_mask: Any, labels: Any) -> Any:
    """Mean cross-entropy over the predicted pieces (labels other than :data:`IGNORE_INDEX`).

    The head runs only on the gathered predicted positions when the model's head is one module
    over the base model's hidden states; otherwise the model computes its own loss.
    """
    import torch.nn.functional as F

    head = _mlm_head(model)
    if head is None:
        return model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask)[0]
    picked = labels != IGNORE_INDEX
    logits = head(hidden[picked])  # shape: (predicted pieces, vocab)
    return F.cross_entropy(logits.float(), labels[picked])


# --------------------------------------------------------------------------- training


@dataclass
class PretrainResult:
    """What a pretraining run produced."""

    lang: str
    output_dir: Path
    steps: int
    seconds: float
    final_loss: float
    corpus: CorpusStats
    masking: MaskStats
    fresh_head: bool
    losses: list[float] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        """Flat numbers for MLflow."""
        out = {f"corpus_{k}": float(v) for k, v in asdict(self.corpus).items()}
        out.update({f"masking_{k}": v for k, v in self.masking.summary().items()})
        out.update(
            steps=float(self.steps),
            seconds=self.seconds,
            seconds_per_step=self.seconds / max(1, self.steps),
            final_loss=self.final_loss,
        )
        return out


def pretrained_encoder(params: Params, lang: str) -> str:
    """The adapted encoder folder training uses for ``lang`` when pretraining is enabled.

    Raises:
        FileNotFoundError: The folder holds no encoder; the message names the command to run.
    """
    folder = pretrained_encoder_dir(params, lang)
    if (folder / "config.json").is_file():
        return str(folder.resolve())
    why = (
        f"only a {SKIP_MARKER} marker from a run with pretrain.enabled false"
        if (folder / SKIP_MARKER).is_file()
        else "it does not exist or holds no config.json"
    )
    raise FileNotFoundError(
        f"pretrain.enabled is true but {folder} holds no pre-trained encoder ({why}); "
        f"run `complex-ner pretrain --lang {lang}` (or `dvc repro pretrain`) first"
    )


def _optimizer(model: Any, lr: float) -> Any:
    import torch

    decay, no_decay = [], []
    for name, p in model.named_parameters():  # shared (tied) parameters appear once
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": _WEIGHT_DECAY},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)


def _schedule(optimizer: Any, total: int) -> Any:
    import torch

    warmup = int(total * _WARMUP_FRACTION)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, 1.0 - (step - warmup) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@contextmanager
def _staged_folder(out_dir: Path) -> Iterator[Path]:
    """A folder beside ``out_dir``, renamed over it when the block succeeds."""
    from complex_ner.core.io import staging_dir
    from complex_ner.domain.encoders import _publish_dir

    with staging_dir(out_dir) as staging:
        yield staging
        _publish_dir(staging, out_dir)


def pretrain_encoder(
    params: Params,
    lang: str,
    *,
    progress: bool = True,
    on_step: StepCallback | None = None,
    extra: dict[str, Any] | None = None,
) -> PretrainResult:
    """Continue pre-training ``model.encoder`` with WWM on ``lang`` and save it.

    Args:
        progress: Show a progress bar.
        on_step: Called after every optimiser step with ``step``, ``loss`` and ``lr``.
        extra: Extra JSON written into ``pretrain.json``.

    Returns:
        The result; the encoder is in ``<pretrain.output_dir>/<lang>``.
    """
    import torch
    from tqdm.auto import tqdm

    from complex_ner.core.device import autocast_context, pick_device, pick_precision
    from complex_ner.domain.encoders import load_tokenizer, resolve_encoder
    from complex_ner.domain.models.tagger import iter_batches

    cfg = params.pretrain
    started = time.perf_counter()
    base = resolve_encoder(params.model.encoder, params.root)
    tokenizer = load_tokenizer(base)
    vocab = masking_vocab(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    examples, corpus = build_corpus(params, lang, tokenizer)

    device = pick_device(params.train.device)
    precision = pick_precision(params.train.precision, device)
    if params.train.threads > 0:
        torch.set_num_threads(params.train.threads)
    model, fresh_head = load_mlm_model(base, cfg.seed)
    if cfg.freeze_embeddings:
        # The 250k-row word embeddings (and the decoder tied to them) dominate the step cost on
        # a CPU: frozen, a step is ~2.5x faster; the encoder layers and MLM transform still adapt.
        model.get_input_embeddings().weight.requires_grad_(False)
    model.to(device)
    model.train()
    steps_per_epoch = math.ceil(len(examples) / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    optimizer = _optimizer(model, cfg.lr)
    scheduler = _schedule(optimizer, total_steps)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")

    masking = MaskStats()
    losses: list[float] = []
    step = 0
    bar = tqdm(total=total_steps, desc=f"pretrain {lang}", disable=not progress, leave=False)
    for epoch in range(1, cfg.epochs + 1):
        torch.manual_seed(cfg.seed * 1000 + epoch)  # dropout
        order = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        rng = np.random.default_rng([cfg.seed, epoch])
        for indices in iter_batches(examples, cfg.batch_size, order):  # type: ignore[arg-type]
            rows = []
            for i in indices:
                ids, labels, stats = wwm_mask(
                    examples[i].input_ids, examples[i].word_ids, vocab, cfg.mask_fraction, rng
                )
                masking += stats
                rows.append((ids, labels))
            input_ids, attention, labels = (t.to(device) for t in collate_masked(rows, pad_id))
            with autocast_context(device, precision):
                loss = masked_lm_loss(model, input_ids, attention, labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), _CLIP_NORM)
            scaler.step(optimizer)
            scaler.update()
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            step += 1
            value = float(loss.detach())
            losses.append(value)
            bar.update(1)
            bar.set_postfix(loss=f"{value:.3f}")
            if on_step is not None:
                on_step({"step": float(step), "loss": value, "lr": lr, "epoch": float(epoch)})
    bar.close()
    seconds = time.perf_counter() - started
    tail = losses[-max(1, min(len(losses), 50)) :]
    result = PretrainResult(
        lang=lang,
        output_dir=pretrained_encoder_dir(params, lang),
        steps=step,
        seconds=seconds,
        final_loss=sum(tail) / len(tail),
        corpus=corpus,
        masking=masking,
        fresh_head=fresh_head,
        losses=losses,
    )
    summary = {
        "lang": lang,
        "base_encoder": params.model.encoder,
        "fresh_mlm_head": fresh_head,
        "segmenter": SEGMENTER if lang in _SEGMENTED_LANGUAGES else "MultiCoNER tokens",
        "join": params.model.join,
        "pretrain": json.loads(json.dumps(asdict(cfg))),
        "device": str(device),
        "precision": precision,
        "corpus": asdict(corpus),
        "masking": masking.summary(),
        "steps": step,
        "seconds": round(seconds, 3),
        "seconds_per_step": round(seconds / max(1, step), 4),
        "loss": {
            "first": losses[0] if losses else None,
            "final_mean_50": result.final_loss,
        },
        **(extra or {}),
    }
    model.to("cpu")
    with _staged_folder(result.output_dir) as staging:
        model.base_model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / PRETRAIN_RESULT_FILE).write_text(
            json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    return result


def write_skip_marker(params: Params, lang: str) -> Path:
    """With pretraining disabled: write ``<output_dir>/<lang>/SKIPPED`` (DVC's stage output).

    A folder that already holds a pre-trained encoder is left as it is (DVC removes a stage's
    outputs before running it, so this only protects hand-made runs).
    """
    folder = pretrained_encoder_dir(params, lang)
    if (folder / "config.json").is_file():
        return folder
    with _staged_folder(folder) as staging:
        (staging / SKIP_MARKER).write_text(
            "pretrain.enabled is false in params.yaml, so no encoder was pre-trained here and "
            "training uses model.encoder.\nSet pretrain.enabled: true and run "
            f"`complex-ner pretrain --lang {lang}` (or `dvc repro`) to build one.\n",
            encoding="utf-8",
        )
    return folder


# --------------------------------------------------------------------------- tracking


def pretrain_tracked(params: Params, lang: str, *, progress: bool = True) -> PretrainResult:
    """:func:`pretrain_encoder` inside an MLflow run ``pretrain-<lang>`` (nested under
    ``$COMPLEX_NER_PARENT_RUN_ID`` when set): loss and lr per step, corpus and masking stats."""
    import mlflow
    from mlflow.entities import Metric

    from complex_ner.adapters import tracking

    tracking.setup(params)
    tags = {
        "lang": lang,
        "kind": "pretrain",
        "encoder": params.model.encoder,
        "git_commit": tracking.git_commit(params.root),
        "data_version": tracking.data_version(params),
    }
    parent = os.environ.get(tracking.PARENT_ENV)
    if parent:
        tags["mlflow.parentRunId"] = parent
    client = mlflow.MlflowClient()
    with mlflow.start_run(run_name=f"pretrain-{lang}", tags=tags) as run:
        run_id = run.info.run_id
        logged = {f"pretrain.{k}": v for k, v in asdict(params.pretrain).items()}
        logged.update({"model.encoder": params.model.encoder, "model.join": params.model.join})
        mlflow.log_params(
            {k: json.dumps(v) if isinstance(v, tuple) else v for k, v in logged.items()}
        )
        buffer: list[Any] = []

        def flush() -> None:
            if buffer:
                client.log_batch(run_id, metrics=list(buffer))
                buffer.clear()

        def on_step(record: dict[str, float]) -> None:
            now, step = int(time.time() * 1000), int(record["step"])
            buffer.append(Metric("loss", record["loss"], now, step))
            buffer.append(Metric("lr", record["lr"], now, step))
            if len(buffer) >= 2 * _LOG_FLUSH:
                flush()

        try:
            result = pretrain_encoder(
                params, lang, progress=progress, on_step=on_step, extra={"mlflow_run_id": run_id}
            )
        finally:
            flush()
        mlflow.log_metrics(result.metrics())
        mlflow.log_artifact(str(result.output_dir / PRETRAIN_RESULT_FILE), "pretrain")
    return result


def run_pretrain(params: Params, lang: str, *, progress: bool = True) -> dict[str, Any]:
    """What ``complex-ner pretrain`` and the Prefect task do for one language.

    Returns:
        ``{"lang", "status": "pretrained" | "skipped", "output_dir", ...}``.
    """
    if not params.pretrain.enabled:
        folder = write_skip_marker(params, lang)
        return {"lang": lang, "status": "skipped", "output_dir": str(folder)}
    result = pretrain_tracked(params, lang, progress=progress)
    return {
        "lang": lang,
        "status": "pretrained",
        "output_dir": str(result.output_dir),
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "final_loss": result.final_loss,
        "sentences": result.corpus.sentences,
        "masked_word_share": result.masking.summary()["masked_word_share"],
    }
