"""Several saved taggers of one language tagging together (:class:`TaggerEnsemble`).

Two rules. ``vote`` (:func:`majority_spans`) keeps the entities that more than half of the
members predict with their own decoding (Viterbi for the CRF heads). ``mean`` averages the
members' per-word tag marginals (CRF forward-backward, or the linear head's softmax) and decodes
them with a BIO-constrained Viterbi over their logarithms (:func:`decode_marginals`). Each
member runs through its own tokenizer and windows, so members may differ in head, seed, dropout
or even encoder as long as they share the tag list.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from complex_ner.core.bio import majority_spans
from complex_ner.core.config import ENSEMBLE_RULES
from complex_ner.domain.models.numpy_crf import decode_marginals as numpy_decode_marginals
from complex_ner.domain.models.tagger import Tagger

__all__ = [
    "RULES",
    "TaggerEnsemble",
    "combine",
    "decode_marginals",
    "majority_spans",
    "tagger_marginals",
]

#: How an ensemble combines its members: ``vote`` keeps the entities most members predicted
#: (:func:`majority_spans`), ``mean`` decodes the averaged marginals (:func:`decode_marginals`).
RULES: tuple[str, ...] = ENSEMBLE_RULES


class TaggerEnsemble:
    """Taggers that share one tag list, combined by a vote on entities or averaged marginals.

    Args:
        members: At least one tagger; all with the same ``tags`` in the same order.
        names: How each member is called in error messages (default ``member 0``, ...).
        rule: One of :data:`RULES`.

    Raises:
        ValueError: No members, members whose tag lists differ, or an unknown rule.
    """

    def __init__(
        self, members: Sequence[Tagger], names: Sequence[str] | None = None, rule: str = "vote"
    ) -> None:
        if rule not in RULES:
            raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
        self.rule = rule
        if not members:
            raise ValueError("an ensemble needs at least one tagger")
        names = list(names) if names is not None else [f"member {i}" for i in range(len(members))]
        if len(names) != len(members):
            raise ValueError(f"got {len(names)} names for {len(members)} members")
        self.members = list(members)
        self.names = names
        self.tags: tuple[str, ...] = tuple(members[0].tags)
        for name, member in zip(names[1:], members[1:], strict=True):
            if tuple(member.tags) != self.tags:
                raise ValueError(
                    f"{name}: tags {list(member.tags)} differ from {names[0]}'s {list(self.tags)}"
                )

    @classmethod
    def load(
        cls, folders: Sequence[str | Path], device: str | torch.device = "cpu", rule: str = "vote"
    ) -> TaggerEnsemble:
        """Load every saved model folder (see :meth:`Tagger.load`) as one ensemble."""
        members = [Tagger.load(f, device=device) for f in folders]
        return cls(members, [str(f) for f in folders], rule)

    def marginals(
        self, sentences: Sequence[Sequence[str]], batch_size: int = 64
    ) -> list[torch.Tensor]:
        """The members' mean tag marginals per sentence, each of shape ``(words, num_tags)``."""
        total: list[torch.Tensor] | None = None
        for member in self.members:
            _, rows = tagger_marginals(member, sentences, batch_size)
            total = rows if total is None else [a + b for a, b in zip(total, rows, strict=True)]
        assert total is not None  # at least one member
        return [t / len(self.members) for t in total]

    def predict(self, sentences: Sequence[Sequence[str]], batch_size: int = 64) -> list[list[str]]:
        """Valid BIO tags per word for every sentence, by this ensemble's rule."""
        if self.rule == "mean":
            return combine("mean", [], [self.marginals(sentences, batch_size)], self.tags)
        # One member at a time: a member's own decoding (Viterbi for the CRF heads).
        per_member = [m.predict(sentences, batch_size) for m in self.members]
        return combine("vote", per_member, [], self.tags)


def combine(
    rule: str,
    own_tags: Sequence[Sequence[Sequence[str]]],
    marginals: Sequence[Sequence[torch.Tensor]],
    tags: Sequence[str],
    batch_size: int = 64,
) -> list[list[str]]:
    """The members' predictions of the same sentences combined by ``rule``.

    Args:
        rule: ``vote`` reads only ``own_tags``; ``mean`` reads only ``marginals``.
        own_tags: Per member, its own decoded BIO tags per sentence.
        marginals: Per member, its tag marginals per sentence, each ``(words, num_tags)``.
        tags: BIO tag names indexed by tag id.
        batch_size: Sentences per Viterbi batch (``mean``).

    Raises:
        ValueError: An unknown rule, or no members for it.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    members = own_tags if rule == "vote" else marginals
    if not members:
        raise ValueError(f"rule {rule!r} needs at least one member's predictions")
    if rule == "vote":
        return [majority_spans(votes) for votes in zip(*own_tags, strict=True)]
    mean = [sum(rows) / len(marginals) for rows in zip(*marginals, strict=True)]
    return [[tags[i] for i in row] for row in decode_marginals(mean, tags, batch_size)]


def tagger_marginals(
    tagger: Tagger, sentences: Sequence[Sequence[str]], batch_size: int = 64
) -> tuple[list[list[int]], list[torch.Tensor]]:
    """One tagger's own decoded tag ids and its tag marginals per sentence, in one pass.

    Returns:
        ``(paths, marginals)``: per sentence the tagger's tag ids and a float64 tensor of shape
        ``(words, num_tags)``.
    """
    paths, probs = tagger.predict_ids(sentences, batch_size, with_marginals=True)
    assert probs is not None  # asked for with_marginals
    num_tags = len(tagger.tags)
    # shape: (words, num_tags) per sentence
    return paths, [torch.tensor(p, dtype=torch.float64).reshape(-1, num_tags) for p in probs]


def decode_marginals(
    marginals: Sequence[torch.Tensor], tags: Sequence[str], batch_size: int = 64
) -> list[list[int]]:
    """:func:`complex_ner.domain.models.numpy_crf.decode_marginals` of torch tensors (float64)."""
    return numpy_decode_marginals(
        [m.detach().cpu().double().numpy() for m in marginals], tags, batch_size
    )
