"""Whole-word-masking (WWM) continued pre-training of the encoder on the NER training text.

The SemEval paper's encoders were pre-trained with whole word masking (for Chinese, words found
by word segmentation). ``complex-ner pretrain --lang <lang>`` adapts ``model.encoder`` to one
language's MultiCoNER text the same way and writes a standard HuggingFace encoder folder to
``<pretrain.output_dir>/<lang>``; with ``pretrain.enabled: true`` training starts from it. The
word units, masking, examples and MLM model are in :mod:`complex_ner.domain.wwm`; this module
builds the corpus and runs the shared training loop (:mod:`complex_ner.engines.trainer`).

Corpus
    The language's training sentences (text only, ``data/processed/<lang>/train.conll``) plus the
    lines of ``pretrain.extra_text_files`` (plain text, one sentence per line), split into words
    with :func:`complex_ner.engines.predict.tokenize` and lowercased like prediction input
    (:func:`complex_ner.engines.predict.model_words`). ``pretrain.max_sentences`` caps the total,
    training sentences first. They become examples with
    :func:`complex_ner.domain.wwm.encode_examples`.

Training
    Masks are redrawn every epoch (dynamic masking) from a generator seeded by ``(seed, epoch)``,
    so a run is reproducible. AdamW (``pretrain.lr``, weight decay 0.01 except biases and
    norms), 6% linear warm-up then linear decay to 0, gradient clipping at 1.0, length-bucketed
    batches in a seeded order; device and precision follow ``train.device``/``train.precision``.
    Progress (loss and learning rate per step) goes to the callbacks the caller passes; the
    application layer tracks the run in MLflow through one.

Output
    ``<output_dir>/<lang>`` holds the adapted encoder without the MLM head (``config.json``,
    ``model.safetensors``), the tokenizer and ``pretrain.json`` (corpus size, masking statistics,
    loss, seconds), written in a folder beside it and renamed into place. With pretraining
    disabled the command only writes a ``SKIPPED`` marker there (DVC needs the stage's output).

Corpus sizes, masking shares and seconds per step: ``docs/results.md``, section "WWM corpus
and step cost".
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from complex_ner.core.config import Params
from complex_ner.core.device import pick_device, pick_precision
from complex_ner.core.io import replace_dir, staging_dir, write_json
from complex_ner.core.paths import (
    PRETRAIN_RESULT_FILE,
    SKIP_MARKER,
    pretrained_encoder_dir,
    split_file,
)
from complex_ner.domain.data import read_conll
from complex_ner.domain.encoders import load_tokenizer, resolve_encoder
from complex_ner.domain.models.tagger import iter_batches
from complex_ner.domain.wwm import (
    CorpusStats,
    MaskStats,
    PretrainExample,
    collate_masked,
    encode_examples,
    load_mlm_model,
    masked_lm_loss,
    masking_vocab,
    segmenter,
    wwm_mask,
)
from complex_ner.engines.predict import model_words, tokenize
from complex_ner.engines.trainer import Callback, Trainer, decay_groups, linear_schedule

_WARMUP_FRACTION = 0.06  # RoBERTa's warm-up share
_WEIGHT_DECAY = 0.01
_CLIP_NORM = 1.0
_FINAL_LOSS_STEPS = 50  # the reported final loss is the mean of the last steps

MlmBatch = tuple[Tensor, Tensor, Tensor]  # input_ids, attention_mask, labels


# --------------------------------------------------------------------------- corpus


def _read_text_lines(path: Path, lang: str) -> list[list[str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise OSError(f"{path}: cannot read pretrain.extra_text_files entry: {exc}") from exc
    return [w for w in (model_words(tokenize(line, lang), lang) for line in text.splitlines()) if w]


def corpus_sentences(params: Params, lang: str) -> tuple[list[list[str]], CorpusStats]:
    """The training sentences' tokens of ``lang`` plus the extra text files, capped."""
    train = split_file(params, lang, "train")
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
        """Flat numbers for a tracking run."""
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


class _MaskedBatches:
    """The trainer's batch function: length-bucketed examples, masked afresh every epoch."""

    def __init__(
        self,
        examples: Sequence[PretrainExample],
        tokenizer: Any,
        mask_fraction: float,
        batch_size: int,
        seed: int,
        device: torch.device,
    ) -> None:
        self.examples = examples
        self.vocab = masking_vocab(tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.mask_fraction = mask_fraction
        self.batch_size = batch_size
        self.seed = seed
        self.device = device
        self.masking = MaskStats()  # summed over every batch of the run

    def __call__(self, epoch: int, order: torch.Generator) -> Iterator[MlmBatch]:
        rng = np.random.default_rng([self.seed, epoch])  # this epoch's masks
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


def pretrain_encoder(
    params: Params,
    lang: str,
    *,
    callbacks: Sequence[Callback] = (),
    extra: dict[str, Any] | None = None,
) -> PretrainResult:
    """Continue pre-training ``model.encoder`` with WWM on ``lang`` and save it.

    Args:
        callbacks: Observe the run: ``on_step_end`` gets each step's loss and learning rate.
        extra: Extra JSON written into ``pretrain.json`` (a tracking run's id).

    Returns:
        The result; the encoder is in ``<pretrain.output_dir>/<lang>``.
    """
    cfg = params.pretrain
    started = time.perf_counter()
    base = resolve_encoder(params.model.encoder, params.root)
    tokenizer = load_tokenizer(base)
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
    steps_per_epoch = math.ceil(len(examples) / cfg.batch_size)
    optimizer = torch.optim.AdamW(decay_groups(model, cfg.lr, _WEIGHT_DECAY), lr=cfg.lr)
    batches = _MaskedBatches(
        examples, tokenizer, cfg.mask_fraction, cfg.batch_size, cfg.seed, device
    )

    def loss_fn(batch: MlmBatch) -> Tensor:
        input_ids, attention, labels = batch  # shape: (batch, pieces) each
        return masked_lm_loss(model, input_ids, attention, labels)

    loop = Trainer[MlmBatch](
        model,
        optimizer,
        linear_schedule(optimizer, cfg.epochs * steps_per_epoch, _WARMUP_FRACTION),
        epochs=cfg.epochs,
        steps_per_epoch=steps_per_epoch,
        seed=cfg.seed,
        device=device,
        precision=precision,
        clip_norm=_CLIP_NORM,
        callbacks=callbacks,
    ).fit(batches, loss_fn)
    losses = loop.step_losses
    seconds = time.perf_counter() - started
    tail = losses[-max(1, min(len(losses), _FINAL_LOSS_STEPS)) :]
    result = PretrainResult(
        lang=lang,
        output_dir=pretrained_encoder_dir(params, lang),
        steps=loop.step,
        seconds=seconds,
        final_loss=sum(tail) / len(tail),
        corpus=corpus,
        masking=batches.masking,
        fresh_head=fresh_head,
        losses=losses,
    )
    summary = {
        "lang": lang,
        "base_encoder": params.model.encoder,
        "fresh_mlm_head": fresh_head,
        "segmenter": segmenter(lang),
        "join": params.model.join,
        "pretrain": cfg.model_dump(mode="json"),
        "device": str(device),
        "precision": precision,
        "corpus": asdict(corpus),
        "masking": batches.masking.summary(),
        "steps": loop.step,
        "seconds": round(seconds, 3),
        "seconds_per_step": round(seconds / max(1, loop.step), 4),
        "loss": {
            "first": losses[0] if losses else None,
            f"final_mean_{_FINAL_LOSS_STEPS}": result.final_loss,
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
            "training uses model.encoder.\nSet pretrain.enabled: true and run "
            f"`complex-ner pretrain --lang {lang}` (or `dvc repro`) to build one.\n",
            encoding="utf-8",
        )
        replace_dir(staging, folder)
    return folder
