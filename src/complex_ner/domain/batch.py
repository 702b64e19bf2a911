"""Encoder windows as padded torch tensors, and each word's label-piece vector.

The torch side of :mod:`complex_ner.domain.alignment` (training, evaluation, export); the ONNX
prediction path pads with numpy instead (:func:`complex_ner.engines.onnx_tagger.collate_numpy`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from complex_ner.domain.alignment import EncodedWindow, pad_windows

__all__ = ["Batch", "collate", "gather_words"]


@dataclass
class Batch:
    """Padded tensors for a list of windows.

    Attributes:
        input_ids: ``(batch, pieces)`` piece ids, padded with ``pad_id``.
        attention_mask: ``(batch, pieces)`` 1 for real pieces, 0 for padding.
        word_index: ``(batch, words)`` label-piece index per word, 0 for padding.
        word_mask: ``(batch, words)`` bool prefix mask of real words.
        labels: ``(batch, words)`` word labels, ``label_pad`` for padding; None if not given.
    """

    input_ids: Tensor
    attention_mask: Tensor
    word_index: Tensor
    word_mask: Tensor
    labels: Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        """A copy with every tensor on ``device``."""
        return Batch(
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            word_index=self.word_index.to(device),
            word_mask=self.word_mask.to(device),
            labels=None if self.labels is None else self.labels.to(device),
        )


def collate(
    windows: Sequence[EncodedWindow],
    pad_id: int,
    sentence_labels: Sequence[Sequence[int]] | None = None,
    label_pad: int = 0,
) -> Batch:
    """Pad windows into a :class:`Batch`.

    Args:
        windows: Windows from :func:`encode_sentences`, in any order.
        pad_id: The tokenizer's padding id (1 for XLM-R, 0 for BERT).
        sentence_labels: Optional label ids per word of every input sentence, indexed by
            ``window.sentence_index`` (the list given to :func:`encode_sentences`).
        label_pad: Label id written at padded word positions.
    """
    arrays = pad_windows(windows, pad_id)
    labels = None
    if sentence_labels is not None:
        labels = torch.full(arrays["word_mask"].shape, label_pad, dtype=torch.long)
        for row, window in enumerate(windows):
            sentence = sentence_labels[window.sentence_index]
            if len(sentence) <= window.word_ids[-1]:
                raise ValueError(
                    f"sentence {window.sentence_index} has {len(sentence)} labels but the "
                    f"window reaches word {window.word_ids[-1]}"
                )
            labels[row, : len(window.word_ids)] = torch.tensor(
                [sentence[w] for w in window.word_ids]
            )
    return Batch(
        # shape: (batch, pieces) each
        input_ids=torch.from_numpy(arrays["input_ids"]),
        attention_mask=torch.from_numpy(arrays["attention_mask"]),
        # shape: (batch, words) each
        word_index=torch.from_numpy(arrays["word_index"]),
        word_mask=torch.from_numpy(arrays["word_mask"]),
        labels=labels,
    )


def gather_words(hidden: Tensor, word_index: Tensor) -> Tensor:
    """Pick each word's label-piece vector: ``(batch, pieces, h)`` -> ``(batch, words, h)``.

    Padded word positions (index 0) receive the first piece's vector; mask them downstream.
    """
    if hidden.dim() != 3 or word_index.dim() != 2 or hidden.size(0) != word_index.size(0):
        raise ValueError(
            f"expected hidden (batch, pieces, h) and word_index (batch, words), got "
            f"{tuple(hidden.shape)} and {tuple(word_index.shape)}"
        )
    # shape: (batch, words, h)
    index = word_index.to(hidden.device).unsqueeze(-1).expand(-1, -1, hidden.size(-1))
    return hidden.gather(1, index)
