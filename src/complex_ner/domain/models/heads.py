"""Tagging heads on top of encoder features, chosen by name (flair-style).

Every head maps word-level features ``(batch, words, hidden)`` to emissions
``(batch, words, num_tags)`` and knows its own loss, decoding and marginals, so the model and
the training loop never branch on the head type.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from complex_ner.core.bio import repair, transition_table
from complex_ner.core.config import HeadConfig
from complex_ner.domain.models.crf import ConstrainedCRF, as_bool_mask

__all__ = [
    "HEADS",
    "BiLSTMCRFHead",
    "CRFHead",
    "Head",
    "LinearHead",
    "build_head",
]


class Head(nn.Module, ABC):
    """Common interface of all tagging heads.

    Args:
        hidden_size: Size of the input features.
        tags: BIO tag names indexed by tag id.

    Attributes:
        loss_unit: What :meth:`loss` averages over, ``"sequence"`` or ``"word"``: a batch split
            across data-parallel processes is weighted by each part's count of these
            (:func:`complex_ner.core.distributed.shard_weight`).
    """

    loss_unit: str = "sequence"

    def __init__(self, hidden_size: int, tags: Sequence[str]) -> None:
        super().__init__()
        if len(tags) == 0:
            raise ValueError("tags must not be empty")
        self.hidden_size = hidden_size
        self.tags: tuple[str, ...] = tuple(tags)
        self.num_tags = len(self.tags)

    def _validate_features(self, features: Tensor, mask: Tensor) -> Tensor:
        if features.dim() != 3:
            raise ValueError(f"features must have dimension of 3, got {features.dim()}")
        if features.size(2) != self.hidden_size:
            raise ValueError(
                f"expected last dimension of features is {self.hidden_size}, got {features.size(2)}"
            )
        return as_bool_mask(mask, features.shape[:2], name="features")

    def _validate_emissions(self, emissions: Tensor, mask: Tensor) -> Tensor:
        if emissions.dim() != 3:
            raise ValueError(f"emissions must have dimension of 3, got {emissions.dim()}")
        if emissions.size(2) != self.num_tags:
            raise ValueError(
                f"expected last dimension of emissions is {self.num_tags}, got {emissions.size(2)}"
            )
        return as_bool_mask(mask, emissions.shape[:2])

    @abstractmethod
    def forward(self, features: Tensor, mask: Tensor) -> Tensor:
        """Map features ``(batch, words, hidden)`` to emissions ``(batch, words, num_tags)``."""

    @abstractmethod
    def loss(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """Scalar training loss; padded positions of ``tags`` are ignored."""

    @abstractmethod
    def decode(self, emissions: Tensor, mask: Tensor) -> list[list[int]]:
        """Valid BIO tag ids per sequence, each of length ``mask[b].sum()``."""

    @abstractmethod
    def marginals(self, emissions: Tensor, mask: Tensor) -> Tensor:
        """Tag probabilities ``(batch, words, num_tags)``, 0 at padding."""


class _CRFHeadBase(Head):
    """Shared CRF loss, decoding and marginals of the CRF heads."""

    def __init__(self, hidden_size: int, tags: Sequence[str], constrain: bool = True) -> None:
        super().__init__(hidden_size, tags)
        self.crf = ConstrainedCRF(self.tags, constrain=constrain)

    def loss(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """Mean CRF negative log-likelihood over the batch."""
        return self.crf.loss(emissions, tags, mask)

    def decode(self, emissions: Tensor, mask: Tensor) -> list[list[int]]:
        """Viterbi paths (BIO-constrained unless ``constrain=False``)."""
        return self.crf.decode(emissions, mask)

    def marginals(self, emissions: Tensor, mask: Tensor) -> Tensor:
        """Forward-backward marginals ``(batch, words, num_tags)``."""
        return self.crf.marginals(emissions, mask)


class CRFHead(_CRFHeadBase):
    """BERT+CRF: dropout, a linear projection to emissions, and a constrained CRF.

    Args:
        hidden_size: Size of the input features.
        tags: BIO tag names indexed by tag id.
        dropout: Dropout probability on the features.
        constrain: Whether decoding forbids invalid BIO transitions.
    """

    def __init__(
        self, hidden_size: int, tags: Sequence[str], dropout: float, constrain: bool = True
    ) -> None:
        super().__init__(hidden_size, tags, constrain=constrain)
        self.dropout = nn.Dropout(dropout)
        self.emission = nn.Linear(hidden_size, self.num_tags)

    def forward(self, features: Tensor, mask: Tensor) -> Tensor:
        """Emissions ``(batch, words, num_tags)``; ``mask`` is only validated."""
        self._validate_features(features, mask)
        # shape: (batch, words, num_tags)
        return self.emission(self.dropout(features))


class BiLSTMCRFHead(_CRFHeadBase):
    """BERT+BiLSTM+CRF: dropout, a packed BiLSTM, dropout, a linear projection, and a CRF.

    Args:
        hidden_size: Size of the input features.
        tags: BIO tag names indexed by tag id.
        dropout: Dropout probability before and after the BiLSTM.
        lstm_hidden: Hidden size of each LSTM direction.
        constrain: Whether decoding forbids invalid BIO transitions.
    """

    def __init__(
        self,
        hidden_size: int,
        tags: Sequence[str],
        dropout: float,
        lstm_hidden: int,
        constrain: bool = True,
    ) -> None:
        super().__init__(hidden_size, tags, constrain=constrain)
        self.lstm_hidden = lstm_hidden
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(hidden_size, lstm_hidden, batch_first=True, bidirectional=True)
        self.emission = nn.Linear(2 * lstm_hidden, self.num_tags)

    def forward(self, features: Tensor, mask: Tensor) -> Tensor:
        """Emissions ``(batch, words, num_tags)``; padding never reaches the backward LSTM."""
        mask = self._validate_features(features, mask)
        seq_len = features.size(1)
        # pack_padded_sequence wants lengths on the CPU.
        # shape: (batch,)
        lengths = mask.sum(dim=1).cpu()
        packed = pack_padded_sequence(
            self.dropout(features), lengths, batch_first=True, enforce_sorted=False
        )
        packed_out, _ = self.lstm(packed)
        # shape: (batch, words, 2 * lstm_hidden), zeros at padding
        hidden, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=seq_len)
        # shape: (batch, words, num_tags)
        return self.emission(self.dropout(hidden))


class LinearHead(Head):
    """BERT+Linear: two fully connected layers and token-level softmax.

    Decoding takes the per-token argmax and repairs it with
    :func:`complex_ner.core.bio.repair`, so the output is always valid BIO.

    Args:
        hidden_size: Size of the input features.
        tags: BIO tag names indexed by tag id.
        dropout: Dropout probability between the two layers.
        fc_hidden: Size of the intermediate layer.
    """

    loss_unit = "word"

    def __init__(
        self, hidden_size: int, tags: Sequence[str], dropout: float, fc_hidden: int
    ) -> None:
        super().__init__(hidden_size, tags)
        # Fail at construction rather than at the first decode on a non-BIO tag set.
        transition_table(self.tags)
        self.fc_hidden = fc_hidden
        self.fc1 = nn.Linear(hidden_size, fc_hidden)
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(fc_hidden, self.num_tags)

    def forward(self, features: Tensor, mask: Tensor) -> Tensor:
        """Emissions (logits) ``(batch, words, num_tags)``; ``mask`` is only validated."""
        self._validate_features(features, mask)
        # shape: (batch, words, fc_hidden)
        hidden = self.dropout(self.activation(self.fc1(features)))
        # shape: (batch, words, num_tags)
        return self.fc2(hidden)

    def loss(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """Token cross-entropy, averaged over unmasked positions."""
        mask = self._validate_emissions(emissions, mask)
        if tuple(tags.shape) != tuple(emissions.shape[:2]):
            raise ValueError(
                "the first two dimensions of emissions and tags must match, "
                f"got {tuple(emissions.shape[:2])} and {tuple(tags.shape)}"
            )
        # shape: (valid_tokens, num_tags) and (valid_tokens,)
        return F.cross_entropy(emissions[mask], tags[mask].long())

    def decode(self, emissions: Tensor, mask: Tensor) -> list[list[int]]:
        """Per-token argmax, repaired to valid BIO."""
        mask = self._validate_emissions(emissions, mask)
        # shape: (batch, words)
        best = emissions.argmax(dim=-1)
        lengths = mask.sum(dim=1).tolist()
        return [
            repair(row[:length], self.tags)
            for row, length in zip(best.tolist(), lengths, strict=True)
        ]

    def marginals(self, emissions: Tensor, mask: Tensor) -> Tensor:
        """Softmax probabilities ``(batch, words, num_tags)``, 0 at padding."""
        mask = self._validate_emissions(emissions, mask)
        # shape: (batch, words, num_tags)
        probs = torch.softmax(emissions, dim=-1)
        return probs.masked_fill(~mask.unsqueeze(-1), 0.0)


HEADS: dict[str, type[Head]] = {
    "bert_crf": CRFHead,
    "bert_bilstm_crf": BiLSTMCRFHead,
    "bert_linear": LinearHead,
}


def build_head(
    name: str,
    hidden_size: int,
    tags: Sequence[str],
    config: HeadConfig,
    constrain: bool = True,
) -> Head:
    """Build a head by name.

    Args:
        name: One of :data:`HEADS`.
        hidden_size: Size of the input features.
        tags: BIO tag names indexed by tag id.
        config: Dropout, and the LSTM (``bert_bilstm_crf``) or intermediate layer
            (``bert_linear``) size.
        constrain: BIO-constrained CRF decoding (CRF heads only).

    Returns:
        The head module.

    Raises:
        ValueError: If ``name`` is unknown.
    """
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; expected one of {', '.join(sorted(HEADS))}")
    head_cls = HEADS[name]
    dropout = config.dropout
    if issubclass(head_cls, BiLSTMCRFHead):
        return head_cls(
            hidden_size, tags, dropout, lstm_hidden=config.lstm_hidden, constrain=constrain
        )
    if issubclass(head_cls, LinearHead):
        return head_cls(hidden_size, tags, dropout, fc_hidden=config.fc_hidden)
    if issubclass(head_cls, CRFHead):
        return head_cls(hidden_size, tags, dropout, constrain=constrain)
    return head_cls(hidden_size, tags, dropout)  # type: ignore[call-arg]
