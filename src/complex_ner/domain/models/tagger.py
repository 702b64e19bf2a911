"""Encoder + head: the sequence tagger, its self-contained folder, and windowed prediction.

A saved model is one folder: ``encoder/`` (HuggingFace config + safetensors weights),
``tokenizer/``, ``head.safetensors`` (head and CRF) and ``tagger.json`` (tags, architecture,
alignment settings and the configuration it was trained with). Loading reads only JSON and
safetensors, so it never unpickles anything and needs no params.yaml.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import Tensor, nn

from complex_ner.core.config import (
    Arch,
    HeadConfig,
    LabelPiece,
    ModelConfig,
    StrTuple,
    WindowConfig,
    config_error,
)
from complex_ner.core.device import autocast_context
from complex_ner.core.io import replace_dir
from complex_ner.core.paths import HEAD_FILE, TAGGER_FILE
from complex_ner.domain.alignment import (
    Batch,
    EncodedWindow,
    collate,
    encode_sentences,
    gather_words,
    merge_windows,
)
from complex_ner.domain.encoders import load_encoder, load_tokenizer
from complex_ner.domain.models.bert_lite import load_lite_encoder
from complex_ner.domain.models.heads import Head, build_head
from complex_ner.domain.rawtok import load_raw_tokenizer

#: Version of the ``tagger.json`` layout: a flat ``spec`` (tags, arch, head hyperparameters,
#: window settings, label_piece, lang, encoder_name).
FORMAT_VERSION = 1


class TaggerSpec(HeadConfig, WindowConfig):
    """Everything needed to rebuild a tagger besides its weights.

    The head hyperparameters and window settings are those of :class:`ModelConfig` (inherited,
    so they are declared once); the rest is fixed when the tagger is built.
    """

    tags: StrTuple
    arch: Arch
    label_piece: LabelPiece
    lang: str
    encoder_name: str

    @classmethod
    def from_config(
        cls, model: ModelConfig, tags: Sequence[str], lang: str, encoder_name: str
    ) -> TaggerSpec:
        """The spec of a tagger built from ``model`` for ``lang`` with this encoder."""
        # Head and window settings by name; the label piece is resolved for the language.
        shared = model.model_dump(include=set(cls.model_fields))
        return cls.model_validate(
            {
                **shared,
                "label_piece": model.piece_for(lang),
                "tags": tuple(tags),
                "lang": lang,
                "encoder_name": encoder_name,
            }
        )

    def to_json(self) -> dict[str, Any]:
        """The flat JSON object stored under ``spec`` in ``tagger.json``."""
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, raw: Any, source: str | Path = TAGGER_FILE) -> TaggerSpec:
        """Read :meth:`to_json`'s object (any ``FORMAT_VERSION`` 1 file).

        Raises:
            ConfigError: an unknown or missing field or a bad value, named with ``source``.
        """
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise config_error(source, cls, exc) from None


class Tagger(nn.Module):
    """A BERT-family encoder, one label piece per word, and a head (CRF, BiLSTM-CRF or linear)."""

    def __init__(self, encoder: nn.Module, tokenizer: Any, spec: TaggerSpec) -> None:
        super().__init__()
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.spec = spec
        self.tags = spec.tags
        self.tag_to_id = {t: i for i, t in enumerate(spec.tags)}
        hidden = int(encoder.config.hidden_size)
        self.head: Head = build_head(spec.arch, hidden, spec.tags, spec)

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else 0)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------ tensors

    def emissions(self, batch: Batch) -> Tensor:
        """Word-level emissions for a batch of windows."""
        out = self.encoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        # shape: (batch, pieces, hidden)
        hidden = out.last_hidden_state
        # shape: (batch, words, hidden)
        words = gather_words(hidden, batch.word_index)
        # shape: (batch, words, num_tags)
        return self.head(words.float(), batch.word_mask)

    def loss(self, batch: Batch) -> Tensor:
        """Mean training loss of a labelled batch."""
        if batch.labels is None:
            raise ValueError("the batch has no labels")
        em = self.emissions(batch)
        return self.head.loss(em.float(), batch.labels, batch.word_mask)

    # ------------------------------------------------------------------ words in, tags out

    def encode(self, sentences: Sequence[Sequence[str]]) -> list[EncodedWindow]:
        """Windows for these sentences with this tagger's alignment settings."""
        return encode_sentences(
            self.tokenizer,
            sentences,
            max_length=self.spec.max_length,
            stride=self.spec.stride,
            label_piece=self.spec.label_piece,
            join=self.spec.join,
        )

    @torch.inference_mode()
    def predict_ids(
        self,
        sentences: Sequence[Sequence[str]],
        batch_size: int = 64,
        with_marginals: bool = False,
    ) -> tuple[list[list[int]], list[list[list[float]]] | None]:
        """Tag ids per word (and, optionally, per-word tag marginals) for every sentence.

        Windows are sorted by length so batches carry little padding; every input word gets a
        tag, long sentences through overlapping windows.
        """
        was_training = self.training
        self.eval()
        windows = self.encode(sentences)
        order = sorted(range(len(windows)), key=lambda i: len(windows[i].input_ids))
        preds: list[list[int]] = [[] for _ in windows]
        margs: list[list[list[float]]] = [[] for _ in windows]
        device = self.device
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = collate([windows[i] for i in idx], self.pad_id).to(device)
            with autocast_context(device, None):
                em = self.emissions(batch).float()
            decoded = self.head.decode(em, batch.word_mask)
            probs = self.head.marginals(em, batch.word_mask).cpu() if with_marginals else None
            for row, i in enumerate(idx):
                preds[i] = decoded[row]
                if probs is not None:
                    margs[i] = probs[row, : len(decoded[row])].tolist()
        self.train(was_training)
        lengths = [len(s) for s in sentences]
        merged = merge_windows(windows, preds, len(sentences), lengths)
        merged_m = (
            merge_windows(windows, margs, len(sentences), lengths) if with_marginals else None
        )
        return merged, merged_m

    def predict(self, sentences: Sequence[Sequence[str]], batch_size: int = 64) -> list[list[str]]:
        """BIO tags per word for every sentence."""
        ids, _ = self.predict_ids(sentences, batch_size)
        return [[self.tags[i] for i in row] for row in ids]

    # ------------------------------------------------------------------ persistence

    def save(self, folder: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write the self-contained model folder atomically (temporary folder, then rename)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            self.encoder.save_pretrained(tmp / "encoder", safe_serialization=True)
            self.tokenizer.save_pretrained(tmp / "tokenizer")
            state = {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
            save_file(state, str(tmp / HEAD_FILE))
            meta = {"format_version": FORMAT_VERSION, "spec": self.spec.to_json(), **(extra or {})}
            (tmp / TAGGER_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
            replace_dir(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return folder

    @classmethod
    def load(
        cls, folder: str | Path, device: str | torch.device = "cpu", lean: bool = True
    ) -> Tagger:
        """Load a folder written by :meth:`save` (JSON and safetensors only).

        Args:
            folder: The model folder.
            device: Where to put the model.
            lean: Prediction's fast path: read ``tokenizer/tokenizer.json`` with the raw
                ``tokenizers`` library (:mod:`complex_ner.domain.rawtok`) and a plain BERT
                encoder with :mod:`complex_ner.domain.models.bert_lite`, so transformers is never
                imported (about 10 s of the CLI's cold start). Both give the same pieces and
                outputs as the transformers objects; whatever they do not support (no
                ``tokenizer.json``, not a plain BERT) is loaded through transformers. ``False``
                always uses transformers.

        Raises:
            FileNotFoundError: ``folder`` has no ``tagger.json``.
            ValueError: an unsupported ``format_version``, or a bad ``spec`` (a
                :class:`~complex_ner.core.config.ConfigError` naming the field).
        """
        from safetensors.torch import load_file

        folder = Path(folder)
        meta_path = folder / TAGGER_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"{folder}: not a complex-ner model folder (no {TAGGER_FILE})")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{meta_path}: unsupported format_version {meta.get('format_version')}"
            )
        spec = TaggerSpec.from_json(meta.get("spec"), meta_path)
        encoder: Any = None
        tokenizer: Any = None
        if lean:
            encoder = load_lite_encoder(folder / "encoder")
            tokenizer = load_raw_tokenizer(folder / "tokenizer")
        if encoder is None:
            encoder = load_encoder(str(folder / "encoder"))
        if tokenizer is None:
            tokenizer = load_tokenizer(str(folder / "tokenizer"))
        tagger = cls(encoder, tokenizer, spec)
        tagger.head.load_state_dict(load_file(str(folder / HEAD_FILE)))
        return tagger.to(device).eval()


def build_model(encoder_name: str, tags: Sequence[str], model: ModelConfig, lang: str) -> Tagger:
    """Build a fresh tagger for ``lang``: the encoder by hub name or local path, the head by
    ``model.arch`` with ``model``'s hyperparameters.

    Args:
        encoder_name: Hub name or local folder of the encoder (``model.encoder`` is not used:
            callers resolve it, or pick a pre-trained one).
        tags: BIO tag names indexed by tag id.
        model: Head, window and alignment settings.
        lang: The language trained on (chooses the label piece).
    """
    spec = TaggerSpec.from_config(model, tags, lang, encoder_name)
    encoder = load_encoder(encoder_name, dropout=spec.dropout)
    return Tagger(encoder, load_tokenizer(encoder_name), spec)


def iter_batches(
    windows: Sequence[EncodedWindow], batch_size: int, generator: torch.Generator | None = None
) -> Iterator[list[int]]:
    """Length-bucketed batches of window indices, in a shuffled (seeded) order.

    Sorting by piece count and chunking keeps padding low; shuffling the chunks keeps the
    gradient noise of random batches.
    """
    order = sorted(range(len(windows)), key=lambda i: (len(windows[i].input_ids), i))
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if generator is not None:
        perm = torch.randperm(len(chunks), generator=generator).tolist()
        chunks = [chunks[i] for i in perm]
    yield from chunks
