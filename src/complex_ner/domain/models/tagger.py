"""Encoder + head: the sequence tagger, its self-contained folder, and windowed prediction.

A saved model is one folder: ``encoder/`` (HuggingFace config + safetensors weights),
``tokenizer/``, ``head.safetensors`` (head and CRF) and ``tagger.json`` (tags, architecture,
alignment settings and the configuration it was trained with). Loading reads only JSON and
safetensors, so it never unpickles anything and needs no params.yaml.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from complex_ner.core.config import ModelConfig
from complex_ner.core.device import autocast_context
from complex_ner.core.io import replace_dir, staging_dir, writing
from complex_ner.core.paths import ENCODER_DIR, HEAD_FILE, TAGGER_FILE, TOKENIZER_DIR
from complex_ner.domain.alignment import EncodedWindow, predict_windows
from complex_ner.domain.batch import Batch, collate, gather_words
from complex_ner.domain.encoders import load_encoder, load_tokenizer
from complex_ner.domain.models.heads import Head, build_head
from complex_ner.domain.models.spec import FORMAT_VERSION, TaggerSpec, read_tagger_json

__all__ = ["FORMAT_VERSION", "Tagger", "TaggerSpec", "build_model", "iter_batches"]


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
        return self.spec.encode(self.tokenizer, sentences)

    @torch.inference_mode()
    def predict_ids(
        self,
        sentences: Sequence[Sequence[str]],
        batch_size: int = 64,
        with_marginals: bool = False,
    ) -> tuple[list[list[int]], list[list[list[float]]] | None]:
        """Tag ids per word (and, optionally, per-word tag marginals) for every sentence.

        Every input word gets a tag, long sentences through overlapping windows
        (:func:`~complex_ner.domain.alignment.predict_windows`).
        """
        was_training = self.training
        self.eval()
        device = self.device

        def decode(
            chunk: Sequence[EncodedWindow], marginals: bool
        ) -> tuple[list[list[int]], list[list[list[float]]] | None]:
            batch = collate(chunk, self.pad_id).to(device)
            with autocast_context(device, None):
                # shape: (batch, words, num_tags)
                em = self.emissions(batch).float()
            paths = self.head.decode(em, batch.word_mask)
            if not marginals:
                return paths, None
            # shape: (batch, words, num_tags)
            probs = self.head.marginals(em, batch.word_mask).cpu()
            return paths, [probs[row, : len(p)].tolist() for row, p in enumerate(paths)]

        try:
            return predict_windows(
                self.encode(sentences),
                [len(s) for s in sentences],
                decode,
                batch_size,
                with_marginals,
            )
        finally:
            self.train(was_training)

    def predict(self, sentences: Sequence[Sequence[str]], batch_size: int = 64) -> list[list[str]]:
        """BIO tags per word for every sentence."""
        ids, _ = self.predict_ids(sentences, batch_size)
        return [[self.tags[i] for i in row] for row in ids]

    # ------------------------------------------------------------------ persistence

    def save(self, folder: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write the self-contained model folder atomically (temporary folder, then rename)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        with staging_dir(folder) as tmp, writing(folder):
            self.encoder.save_pretrained(tmp / ENCODER_DIR, safe_serialization=True)
            self.tokenizer.save_pretrained(tmp / TOKENIZER_DIR)
            state = {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
            save_file(state, str(tmp / HEAD_FILE))
            meta = {"format_version": FORMAT_VERSION, "spec": self.spec.to_json(), **(extra or {})}
            (tmp / TAGGER_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
            replace_dir(tmp, folder)
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu") -> Tagger:
        """Load a folder written by :meth:`save` (JSON and safetensors only).

        This is the torch model (training, evaluation, export); prediction runs the folder's
        ONNX export instead (:mod:`complex_ner.engines.onnx_tagger`).

        Raises:
            FileNotFoundError: ``folder`` has no ``tagger.json``.
            ValueError: an unsupported ``format_version``, or a bad ``spec`` (a
                :class:`~complex_ner.core.config.ConfigError` naming the field).
        """
        from safetensors.torch import load_file

        folder = Path(folder)
        spec, _ = read_tagger_json(folder)
        encoder = load_encoder(str(folder / ENCODER_DIR))
        tokenizer = load_tokenizer(str(folder / TOKENIZER_DIR))
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
