"""Whole-word-masking (WWM) continued pre-training of the encoder on the NER training text.

The SemEval paper's encoders were pre-trained with whole word masking (for Chinese, words found
by word segmentation). ``complex-ner pretrain --lang <lang>`` adapts ``model.encoder`` (its
trimmed copy with ``trim.enabled``, :func:`base_encoder`) to one language's MultiCoNER text the
same way and writes a standard HuggingFace encoder folder to
``<pretrain.output_dir>/<lang>``; with ``pretrain.enabled: true`` training starts from it. The
word units, masking, examples and MLM model are in :mod:`complex_ner.domain.wwm`; this module
builds the corpus and runs the shared training loop (:mod:`complex_ner.engines.trainer`).

Corpus
    All the unlabelled text at hand: the text of the language's ``train`` and ``val`` splits
    (``data/processed/<lang>/{train,val}.conll``; never ``heldout``, which scores the models, nor
    the official dev or test files) plus the lines of ``pretrain.extra_text_files`` (plain text,
    one sentence per line, refused when they lie among the labelled data), split into words
    with :func:`complex_ner.engines.predict.tokenize` and lowercased like prediction input
    (:func:`complex_ner.engines.predict.model_words`). Exact repeats are dropped (a repeat of a
    held-back sentence would leak its answers), then ``pretrain.max_sentences`` caps the total,
    train sentences first. A seeded ``pretrain.eval_fraction`` of the sentences (at least one)
    is held back to score the model; the rest become training examples with
    :func:`complex_ner.domain.wwm.encode_examples`.

Head warm-up
    A bare encoder (e5 ships no MLM head) gets a fresh head, started near a unigram model
    (:func:`complex_ner.domain.wwm.init_fresh_head`: identity transform, small LayerNorm scale,
    decoder bias the log piece frequencies of the training examples; decoder tied to the input
    embeddings). Its first ``pretrain.head_warmup_steps`` steps train only the head's own
    parameters at ``pretrain.head_lr`` (same schedule shape and masking, other masks): every
    encoder parameter, the tied decoder weight included, has ``requires_grad`` off, so the
    encoder is not changed and its backward pass is skipped. Without this, a few hundred steps
    with a random head moved the encoder before the head had learnt anything and fine-tuning
    lost 3-7 macro-F1 points (``docs/results.md``). A checkpoint's own MLM head skips it.

Training
    Then the encoder and head train together. Masks are redrawn every epoch (dynamic masking)
    from a generator seeded by ``(seed, epoch)``, so a run is reproducible. AdamW
    (``pretrain.lr``, weight decay 0.01 except biases and norms), 6% linear warm-up then linear
    decay to 0, gradient clipping at 1.0, length-bucketed batches in a seeded order; device and
    precision follow ``train.device``/``train.precision``. The shared loop runs twice (warm-up,
    then this); progress goes to the callbacks the caller passes for each phase; the
    application layer tracks the run in MLflow through them.

Evaluation
    The held-back sentences are masked once (seeded; every chosen word wholly ``<mask>``) and
    scored three times, with the same masks: before the warm-up, after it and at the end:
    masked-token loss, piece accuracy (top prediction right) and whole-word accuracy (every
    piece of the word right). A direct check that pre-training learnt something.

Output
    ``<output_dir>/<lang>`` holds the adapted encoder without the MLM head (``config.json``,
    ``model.safetensors``), the tokenizer and ``pretrain.json`` (corpus size, masking statistics,
    losses of both phases, the three held-back scores, seconds), written in a folder beside it
    and renamed into place. With pretraining
    disabled the command only writes a ``SKIPPED`` marker there (DVC needs the stage's output).

Corpus sizes, masking shares and seconds per step: ``docs/results.md``, section "WWM corpus
and step cost".
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from complex_ner.core.config import Params, PretrainConfig
from complex_ner.core.device import autocast_context, pick_device, pick_precision
from complex_ner.core.io import replace_dir, staging_dir, write_json
from complex_ner.core.paths import (
    PRETRAIN_RESULT_FILE,
    SKIP_MARKER,
    TRAIN_SPLIT,
    VAL_SPLIT,
    pretrained_encoder_dir,
    split_file,
)
from complex_ner.domain.data import read_conll
from complex_ner.domain.encoders import load_tokenizer, resolve_encoder
from complex_ner.domain.models.tagger import iter_batches
from complex_ner.domain.vocab import trimmed_encoder
from complex_ner.domain.wwm import (
    HEAD_NORM_SCALE,
    IGNORE_INDEX,
    CorpusStats,
    MaskStats,
    MlmScore,
    PretrainExample,
    collate_masked,
    encode_examples,
    eval_mask,
    head_parameters,
    init_fresh_head,
    load_mlm_model,
    masked_lm_loss,
    masking_vocab,
    piece_counts,
    predicted_logits,
    score_predictions,
    segmenter,
    wwm_mask,
)
from complex_ner.engines.predict import model_words, tokenize
from complex_ner.engines.trainer import (
    Callback,
    LoopResult,
    Trainer,
    adamw,
    decay_groups,
    linear_schedule,
)

_WARMUP_FRACTION = 0.06  # RoBERTa's warm-up share
_WEIGHT_DECAY = 0.01
_CLIP_NORM = 1.0
_FINAL_LOSS_STEPS = 50  # the reported final loss is the mean of the last steps

#: The splits whose text is pre-trained on: never ``heldout`` (it scores the models).
CORPUS_SPLITS = (TRAIN_SPLIT, VAL_SPLIT)

MlmBatch = tuple[Tensor, Tensor, Tensor]  # input_ids, attention_mask, labels
EvalBatch = tuple[Tensor, Tensor, Tensor, Tensor]  # input_ids, attention_mask, labels, words

# Seeds of the numpy generators, after pretrain.seed. Epoch numbers start at 1 and no key ends
# in 0: numpy's SeedSequence reads [s], [s, 0] and [s, 0, 0] as the same seed.
_WARMUP_KEY = (0, 1)  # + (1, pass): the head warm-up's masks
_EVAL_MASK_KEY = (0, 2)  # the held-back sentences' fixed masks
_EVAL_PICK_KEY = (0, 3)  # which sentences are held back


# --------------------------------------------------------------------------- corpus


def _read_text_lines(path: Path, lang: str) -> list[list[str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise OSError(f"{path}: cannot read pretrain.extra_text_files entry: {exc}") from exc
    return [w for w in (model_words(tokenize(line, lang), lang) for line in text.splitlines()) if w]


def _check_extra_file(params: Params, path: Path) -> None:
    """Refuse an extra text file inside the labelled data (heldout, dev and test live there)."""
    resolved = path.resolve()
    for key, folder in (
        ("split.processed_dir", params.path(params.split.processed_dir)),
        ("data.raw_dir", params.path(params.data.raw_dir)),
        ("data.source_dir", params.source_dir),
    ):
        if resolved.is_relative_to(folder.resolve()):
            raise ValueError(
                f"pretrain.extra_text_files: {path} lies in {key} ({folder}), the labelled "
                "splits; train and val text is already in the corpus, and heldout, dev and "
                "test must never be pre-trained on"
            )


def corpus_sentences(params: Params, lang: str) -> tuple[list[list[str]], CorpusStats]:
    """The tokens of ``lang``'s train and val sentences plus the extra text files: exact repeats
    dropped, capped by ``pretrain.max_sentences`` (see the module docstring)."""
    sources: list[tuple[str, list[list[str]]]] = []
    for split in CORPUS_SPLITS:
        path = split_file(params, lang, split)
        if split == TRAIN_SPLIT or path.is_file():  # a project may have no val split
            sources.append((split, [list(s.tokens) for s in read_conll(path, labeled=False)]))
    extra: list[list[str]] = []
    for name in params.pretrain.extra_text_files:
        path = params.path(name)
        _check_extra_file(params, path)
        extra += _read_text_lines(path, lang)
    sources.append(("extra", extra))
    cap = params.pretrain.max_sentences
    seen: set[tuple[str, ...]] = set()
    sentences: list[list[str]] = []
    counts = dict.fromkeys((*CORPUS_SPLITS, "extra"), 0)
    duplicates = 0
    for source, rows in sources:
        for tokens in rows:
            if cap and len(sentences) >= cap:
                break
            key = tuple(tokens)
            if not key:
                continue
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
            sentences.append(tokens)
            counts[source] += 1
    stats = CorpusStats(
        sentences=len(sentences),
        train_sentences=counts[TRAIN_SPLIT],
        val_sentences=counts[VAL_SPLIT],
        extra_sentences=counts["extra"],
        duplicates=duplicates,
    )
    return sentences, stats


def hold_back(
    sentences: Sequence[list[str]], fraction: float, seed: int
) -> tuple[list[list[str]], list[list[str]]]:
    """``(kept, held)``: a seeded ``fraction`` of the sentences (at least one, never all) held
    back for evaluation; both keep the corpus order. ``fraction`` 0 holds back none."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"pretrain.eval_fraction must be in [0, 1), got {fraction}")
    if fraction == 0.0 or len(sentences) < 2:
        return list(sentences), []
    n_held = min(len(sentences) - 1, max(1, round(fraction * len(sentences))))
    rng = np.random.default_rng([seed, *_EVAL_PICK_KEY])
    held = {int(i) for i in rng.choice(len(sentences), size=n_held, replace=False)}
    kept = [s for i, s in enumerate(sentences) if i not in held]
    return kept, [s for i, s in enumerate(sentences) if i in held]


@dataclass
class Corpus:
    """A pretraining corpus: the examples trained on, the held-back ones and the counts."""

    examples: list[PretrainExample]
    held_out: list[PretrainExample]
    stats: CorpusStats


def build_corpus(params: Params, lang: str, tokenizer: Any) -> Corpus:
    """``lang``'s pretraining corpus (see the module docstring).

    The token, word, piece and example counts of ``stats`` are those of the trained part.

    Raises:
        ValueError: No sentence to pretrain on.
    """
    cfg = params.pretrain
    sentences, stats = corpus_sentences(params, lang)
    if not sentences:
        raise ValueError(f"no {lang} sentences to pretrain on")
    kept, held = hold_back(sentences, cfg.eval_fraction, cfg.seed)
    stats.eval_sentences = len(held)
    examples = encode_examples(tokenizer, kept, lang, cfg.max_length, params.model.join, stats)
    held_out = encode_examples(tokenizer, held, lang, cfg.max_length, params.model.join)
    return Corpus(examples, held_out, stats)


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
    losses: list[float] = field(default_factory=list)  # per step of the main phase
    head_losses: list[float] = field(default_factory=list)  # per step of the head warm-up
    head_seconds: float = 0.0
    # Held-back masked-token scores: "before" (the initialised head), "after_head_warmup", "end".
    scores: dict[str, MlmScore] = field(default_factory=dict)

    @property
    def head_warmup_steps(self) -> int:
        """Steps the head trained alone (0: no warm-up ran)."""
        return len(self.head_losses)

    def loss_summary(self) -> dict[str, float | None]:
        """Training losses before and after the warm-up and at the end (means of the last
        steps of a phase; None for a phase that did not run)."""
        return {
            "head_warmup_first": self.head_losses[0] if self.head_losses else None,
            f"head_warmup_final_mean_{_FINAL_LOSS_STEPS}": _tail_mean(self.head_losses),
            "first": self.losses[0] if self.losses else None,
            f"final_mean_{_FINAL_LOSS_STEPS}": self.final_loss,
        }

    def metrics(self) -> dict[str, float]:
        """Flat numbers for a tracking run."""
        out = {f"corpus_{k}": float(v) for k, v in asdict(self.corpus).items()}
        out.update({f"masking_{k}": v for k, v in self.masking.summary().items()})
        out.update(
            steps=float(self.steps),
            seconds=self.seconds,
            seconds_per_step=(self.seconds - self.head_seconds) / max(1, self.steps),
            final_loss=self.final_loss,
            head_warmup_steps=float(self.head_warmup_steps),
            head_warmup_seconds=self.head_seconds,
        )
        if self.losses:
            out["first_loss"] = self.losses[0]
        head_final = _tail_mean(self.head_losses)
        if head_final is not None:
            out["head_warmup_first_loss"] = self.head_losses[0]
            out["head_warmup_final_loss"] = head_final
        for point, score in self.scores.items():
            if score.pieces:  # no held-back sentence: nothing to log
                out.update({f"eval_{point}_{k}": v for k, v in score.summary().items()})
        return out


def _tail_mean(losses: Sequence[float]) -> float | None:
    """The mean of the last :data:`_FINAL_LOSS_STEPS` losses (None without one)."""
    tail = losses[-_FINAL_LOSS_STEPS:]
    return sum(tail) / len(tail) if tail else None


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


# --------------------------------------------------------------------------- which encoder


def _uses_pretrained(params: Params, lang: str) -> bool:
    return params.pretrain.enabled and lang in params.pretrain.languages


def base_encoder(params: Params, lang: str) -> str:
    """The encoder pretraining of ``lang`` starts from (and training, without pretraining):
    the trimmed folder with ``trim.enabled``, else ``model.encoder``; resolved.

    Raises:
        FileNotFoundError: ``trim.enabled`` and no trimmed encoder yet (names the command).
        ValueError: ``trim.enabled`` and ``lang`` is not a trim language.
    """
    if params.trim.enabled:
        return trimmed_encoder(params, lang)
    return resolve_encoder(params.model.encoder, params.root)


def start_encoder(params: Params, lang: str) -> str:
    """The encoder training of ``lang`` starts from: the one rule, for every caller.

    The WWM-adapted ``<pretrain.output_dir>/<lang>`` when pretraining is enabled for ``lang``
    (itself pretrained from :func:`base_encoder`), else :func:`base_encoder`.

    Raises:
        FileNotFoundError: The chosen folder holds no encoder (the message names the command).
        ValueError: ``trim.enabled`` and ``lang`` is not a trim language.
    """
    if _uses_pretrained(params, lang):
        return pretrained_encoder(params, lang)
    return base_encoder(params, lang)


def base_encoder_label(params: Params) -> str:
    """:func:`base_encoder` as a person reads it (params paths, no file is read)."""
    if params.trim.enabled:
        return f"{params.trim.output_dir} (trimmed {params.model.encoder})"
    return params.model.encoder


def encoder_label(params: Params, lang: str) -> str:
    """:func:`start_encoder` as a person reads it (params paths, no file is read)."""
    if _uses_pretrained(params, lang):
        return f"{params.pretrain.output_dir}/{lang} (WWM-adapted {base_encoder_label(params)})"
    return base_encoder_label(params)


class _MaskedBatches:
    """The trainer's batch function: length-bucketed examples, masked afresh every epoch.

    With ``steps``, an epoch is exactly that many batches: passes over the examples, each with
    new masks and the next order the generator gives (the head warm-up).
    """

    def __init__(
        self,
        examples: Sequence[PretrainExample],
        tokenizer: Any,
        mask_fraction: float,
        batch_size: int,
        key: Sequence[int],
        device: torch.device,
        steps: int = 0,
    ) -> None:
        if not examples:
            raise ValueError("no pretraining examples to batch")
        self.examples = examples
        self.vocab = masking_vocab(tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.mask_fraction = mask_fraction
        self.batch_size = batch_size
        self.key = list(key)  # the masks' seed, before the epoch (and pass) number
        self.device = device
        self.steps = steps
        self.masking = MaskStats()  # summed over every batch of the run

    def __call__(self, epoch: int, order: torch.Generator) -> Iterator[MlmBatch]:
        if not self.steps:
            yield from self._pass(np.random.default_rng([*self.key, epoch]), order)
            return
        done = 0
        for number in itertools.count(1):
            rng = np.random.default_rng([*self.key, epoch, number])
            for batch in self._pass(rng, order):
                yield batch
                done += 1
                if done == self.steps:
                    return

    def _pass(self, rng: np.random.Generator, order: torch.Generator) -> Iterator[MlmBatch]:
        """One pass over the examples, masks drawn from ``rng``."""
        for indices in iter_batches(self.examples, self.batch_size, order):  # type: ignore[arg-type]
            rows = []
            for i in indices:
                example = self.examples[i]
                ids, labels, stats = wwm_mask(
                    example.input_ids, example.word_ids, self.vocab, self.mask_fraction, rng
                )
                self.masking += stats
                rows.append((ids, labels))
            input_ids, attention, labels = collate_masked(rows, self.pad_id)
            yield input_ids.to(self.device), attention.to(self.device), labels.to(self.device)


def eval_batches(
    examples: Sequence[PretrainExample],
    tokenizer: Any,
    mask_fraction: float,
    batch_size: int,
    seed: int,
) -> list[EvalBatch]:
    """The held-back examples, masked once for good (see :func:`eval_mask`), in batches.

    Word numbers are made unique across the batch so that whole-word accuracy can group pieces.
    """
    vocab = masking_vocab(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rng = np.random.default_rng([seed, *_EVAL_MASK_KEY])
    batches: list[EvalBatch] = []
    for start in range(0, len(examples), batch_size):
        rows, word_rows = [], []
        offset = 0
        for example in examples[start : start + batch_size]:
            ids, labels, words = eval_mask(
                example.input_ids, example.word_ids, vocab, mask_fraction, rng
            )
            rows.append((ids, labels))
            word_rows.append((ids, [w + offset if w != IGNORE_INDEX else w for w in words]))
            offset += len(ids)
        input_ids, attention, labels = collate_masked(rows, pad_id)
        _ids, _attention, words = collate_masked(word_rows, pad_id)  # padded with IGNORE_INDEX
        batches.append((input_ids, attention, labels, words))
    return batches


def evaluate_mlm(
    model: Any, batches: Sequence[EvalBatch], device: torch.device, precision: str = "fp32"
) -> MlmScore:
    """Masked-token loss and accuracy of ``model`` on fixed masked batches (eval mode, no
    gradients; the model's train/eval mode is restored)."""
    was_training = model.training
    model.eval()
    score = MlmScore()
    try:
        with torch.no_grad():
            for batch in batches:
                input_ids, attention, labels, words = (t.to(device) for t in batch)
                # shape: (batch, pieces) each
                with autocast_context(device, precision):
                    logits = predicted_logits(model, input_ids, attention, labels)
                    # shape: (predicted pieces, vocab)
                picked = labels != IGNORE_INDEX  # shape: (batch, pieces)
                score += score_predictions(logits, labels[picked], words[picked])
    finally:
        model.train(was_training)
    return score


def _set_trainable(model: Any, *, encoder: bool, freeze_embeddings: bool) -> None:
    """``requires_grad`` for a phase: the head always; the encoder only when ``encoder``, then
    without the word embeddings (and so the decoder tied to them) when ``freeze_embeddings``."""
    for p in model.base_model.parameters():
        p.requires_grad_(encoder)
    for p in head_parameters(model):
        p.requires_grad_(True)
    if encoder and freeze_embeddings:
        # The 250k-row word embeddings (and the decoder tied to them) dominate the step cost on
        # a CPU: frozen, a step is ~2.5x faster; the encoder layers and MLM transform still adapt.
        model.get_input_embeddings().weight.requires_grad_(False)


def _train(
    model: Any,
    batches: _MaskedBatches,
    *,
    lr: float,
    epochs: int,
    steps_per_epoch: int,
    seed: int,
    device: torch.device,
    precision: str,
    callbacks: Sequence[Callback],
) -> LoopResult:
    """One phase with the shared loop: AdamW on the trainable parameters, warm-up and decay."""
    optimizer = adamw(decay_groups(model, lr, _WEIGHT_DECAY))

    def loss_fn(batch: MlmBatch) -> Tensor:
        input_ids, attention, labels = batch  # shape: (batch, pieces) each
        return masked_lm_loss(model, input_ids, attention, labels)

    return Trainer[MlmBatch](
        model,
        optimizer,
        linear_schedule(optimizer, epochs * steps_per_epoch, _WARMUP_FRACTION),
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        seed=seed,
        device=device,
        precision=precision,
        clip_norm=_CLIP_NORM,
        callbacks=callbacks,
    ).fit(batches, loss_fn)


def warm_up_head(
    model: Any,
    examples: Sequence[PretrainExample],
    tokenizer: Any,
    cfg: PretrainConfig,
    *,
    device: torch.device,
    precision: str = "fp32",
    callbacks: Sequence[Callback] = (),
) -> LoopResult:
    """Train only the MLM head for ``cfg.head_warmup_steps`` steps at ``cfg.head_lr``.

    Every base-model parameter (the decoder weight tied to the input embeddings included) has
    ``requires_grad`` off meanwhile, so the encoder stays exactly as it was and no gradient flows
    through it; the flags are restored afterwards. Masks come from their own seeded stream.

    Raises:
        ValueError: ``cfg.head_warmup_steps`` is 0 or there are no examples.
    """
    if cfg.head_warmup_steps < 1:
        raise ValueError("pretrain.head_warmup_steps must be >= 1 to warm the head up")
    flags = [(p, p.requires_grad) for p in model.parameters()]
    batches = _MaskedBatches(
        examples,
        tokenizer,
        cfg.mask_fraction,
        cfg.batch_size,
        (cfg.seed, *_WARMUP_KEY),
        device,
        steps=cfg.head_warmup_steps,
    )
    _set_trainable(model, encoder=False, freeze_embeddings=True)
    try:
        return _train(
            model,
            batches,
            lr=cfg.head_lr,
            epochs=1,
            steps_per_epoch=cfg.head_warmup_steps,
            seed=cfg.seed,
            device=device,
            precision=precision,
            callbacks=callbacks,
        )
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def pretrain_encoder(
    params: Params,
    lang: str,
    *,
    callbacks: Sequence[Callback] = (),
    head_callbacks: Sequence[Callback] = (),
    extra: dict[str, Any] | None = None,
) -> PretrainResult:
    """Continue pre-training :func:`base_encoder` with WWM on ``lang`` and save it.

    Args:
        callbacks: Observe the main phase: ``on_step_end`` gets each step's loss and rate.
        head_callbacks: Observe the head warm-up the same way (its steps count from 1 too).
        extra: Extra JSON written into ``pretrain.json`` (a tracking run's id).

    Returns:
        The result; the encoder is in ``<pretrain.output_dir>/<lang>``.
    """
    cfg = params.pretrain
    started = time.perf_counter()
    base = base_encoder(params, lang)
    tokenizer = load_tokenizer(base)
    corpus = build_corpus(params, lang, tokenizer)

    device = pick_device(params.train.device)
    precision = pick_precision(params.train.precision, device)
    if params.train.threads > 0:
        torch.set_num_threads(params.train.threads)
    model, fresh_head = load_mlm_model(base, cfg.seed)
    head_init = "the checkpoint's MLM head"
    if fresh_head:
        rows = model.get_output_embeddings().weight.shape[0]
        init_fresh_head(model, piece_counts(corpus.examples, rows))
        head_init = (
            f"identity transform, LayerNorm scale {HEAD_NORM_SCALE}, decoder bias the log "
            "piece frequencies, decoder tied to the input embeddings"
        )
    model.to(device)
    held = eval_batches(corpus.held_out, tokenizer, cfg.mask_fraction, cfg.batch_size, cfg.seed)
    scores = {"before": evaluate_mlm(model, held, device, precision)}

    head_losses: list[float] = []
    head_seconds = 0.0
    if fresh_head and cfg.head_warmup_steps:
        warm = warm_up_head(
            model,
            corpus.examples,
            tokenizer,
            cfg,
            device=device,
            precision=precision,
            callbacks=head_callbacks,
        )
        head_losses, head_seconds = warm.step_losses, warm.seconds
    scores["after_head_warmup"] = evaluate_mlm(model, held, device, precision)

    _set_trainable(model, encoder=True, freeze_embeddings=cfg.freeze_embeddings)
    batches = _MaskedBatches(
        corpus.examples, tokenizer, cfg.mask_fraction, cfg.batch_size, (cfg.seed,), device
    )
    loop = _train(
        model,
        batches,
        lr=cfg.lr,
        epochs=cfg.epochs,
        steps_per_epoch=math.ceil(len(corpus.examples) / cfg.batch_size),
        seed=cfg.seed,
        device=device,
        precision=precision,
        callbacks=callbacks,
    )
    scores["end"] = evaluate_mlm(model, held, device, precision)
    losses = loop.step_losses
    final = _tail_mean(losses)
    seconds = time.perf_counter() - started
    result = PretrainResult(
        lang=lang,
        output_dir=pretrained_encoder_dir(params, lang),
        steps=loop.step,
        seconds=seconds,
        final_loss=math.nan if final is None else final,
        corpus=corpus.stats,
        masking=batches.masking,
        fresh_head=fresh_head,
        losses=losses,
        head_losses=head_losses,
        head_seconds=head_seconds,
        scores=scores,
    )
    summary = {
        "lang": lang,
        "base_encoder": base_encoder_label(params),
        "fresh_mlm_head": fresh_head,
        "head_init": head_init,
        "segmenter": segmenter(lang),
        "join": params.model.join,
        "pretrain": cfg.model_dump(mode="json"),
        "device": str(device),
        "precision": precision,
        "corpus": asdict(corpus.stats),
        "masking": batches.masking.summary(),
        "head_warmup": {
            "steps": result.head_warmup_steps,
            "lr": cfg.head_lr,
            "seconds": round(head_seconds, 3),
        },
        "steps": loop.step,
        "seconds": round(seconds, 3),
        "seconds_per_step": round((seconds - head_seconds) / max(1, loop.step), 4),
        "loss": result.loss_summary(),
        "mlm_eval": {
            "sentences": corpus.stats.eval_sentences,
            "examples": len(corpus.held_out),
            # None without a held-back sentence (JSON has no NaN).
            **{point: score.summary() if score.pieces else None for point, score in scores.items()},
        },
        **(extra or {}),
    }
    model.to("cpu")
    with staging_dir(result.output_dir) as staging:
        model.base_model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        write_json(staging / PRETRAIN_RESULT_FILE, summary)
        replace_dir(staging, result.output_dir)
    return result


def write_skip_marker(params: Params, lang: str) -> Path:
    """With pretraining disabled: write ``<output_dir>/<lang>/SKIPPED`` (DVC's stage output).

    A folder that already holds a pre-trained encoder is left as it is (DVC removes a stage's
    outputs before running it, so this only protects hand-made runs).
    """
    folder = pretrained_encoder_dir(params, lang)
    if (folder / "config.json").is_file():
        return folder
    with staging_dir(folder) as staging:
        (staging / SKIP_MARKER).write_text(
            "pretrain.enabled is false in params.yaml, so no encoder was pre-trained here and "
            "training starts from model.encoder (or its trimmed copy).\nSet pretrain.enabled: "
            f"true and run `complex-ner pretrain --lang {lang}` (or `dvc repro`) to build one.\n",
            encoding="utf-8",
        )
        replace_dir(staging, folder)
    return folder
