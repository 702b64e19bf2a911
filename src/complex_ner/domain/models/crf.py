"""Linear-chain CRF with BIO constraints, batched Viterbi and forward-backward marginals.

Training keeps pytorch-crf's log-likelihood (:class:`torchcrf.CRF`) untouched; the BIO
constraints (no ``I-X`` after ``O``, after the start, or after another entity type) are only
applied at inference time, in :func:`viterbi_decode` and :func:`crf_marginals`. The transition
parameters keep torchcrf's uniform initialisation, so the learned scores are the same as with a
plain ``torchcrf.CRF`` and a constrained and an unconstrained model can share one checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torchcrf import CRF

from complex_ner.core.bio import transition_table
from complex_ner.domain.models.numpy_crf import FORBIDDEN_SCORE

__all__ = [
    "FORBIDDEN_SCORE",
    "ConstrainedCRF",
    "as_bool_mask",
    "bio_transition_masks",
    "crf_marginals",
    "viterbi_decode",
]


def bio_transition_masks(tags: Sequence[str]) -> tuple[Tensor, Tensor, Tensor]:
    """The BIO scheme's allowed start, transition and end table as boolean masks.

    The rule itself is :func:`complex_ner.core.bio.transition_table`; this only moves it onto
    tensors so decoding can mask scores.

    Args:
        tags: The tag names, indexed by tag id.

    Returns:
        ``(start_allowed, trans_allowed, end_allowed)`` boolean tensors of shapes
        ``(num_tags,)``, ``(num_tags, num_tags)`` indexed ``[from, to]`` and ``(num_tags,)``.

    Raises:
        ValueError: If ``tags`` is empty, has duplicates or holds a non-BIO tag.
    """
    table = transition_table(tags)
    # shape: (num_tags,)
    start_allowed = torch.tensor(table.start, dtype=torch.bool)
    # shape: (num_tags, num_tags)
    trans_allowed = torch.tensor(table.pairs, dtype=torch.bool)
    # shape: (num_tags,)
    end_allowed = torch.tensor(table.end, dtype=torch.bool)
    return start_allowed, trans_allowed, end_allowed


def as_bool_mask(mask: Tensor, batch_shape: Sequence[int], name: str = "emissions") -> Tensor:
    """Validate a prefix mask and convert it to ``torch.bool``.

    Args:
        mask: Bool or integer tensor of shape ``(batch, seq_len)``; non-zero means "on".
        batch_shape: The expected ``(batch, seq_len)``.
        name: Name of the tensor the mask belongs to, used in error messages.

    Returns:
        The mask as a bool tensor.

    Raises:
        ValueError: On a shape mismatch, a floating mask, an off first timestep or a gap.
    """
    expected = tuple(batch_shape)
    if tuple(mask.shape) != expected:
        raise ValueError(
            f"the first two dimensions of {name} and mask must match, "
            f"got {expected} and {tuple(mask.shape)}"
        )
    if mask.dtype.is_floating_point or mask.dtype.is_complex:
        raise ValueError(f"mask must be a bool or integer tensor, got {mask.dtype}")
    if expected[1] == 0:
        raise ValueError(f"{name} must have at least one timestep")
    # shape: (batch, seq_len)
    mask = mask if mask.dtype == torch.bool else mask != 0
    if not bool(mask[:, 0].all()):
        raise ValueError("mask of the first timestep must all be on")
    # Forward-backward and backtracking assume each sequence is a prefix of the padded row.
    if bool((mask[:, 1:] & ~mask[:, :-1]).any()):
        raise ValueError("mask must be a prefix mask: no timestep may be on after an off one")
    return mask


def _check_emissions(emissions: Tensor, num_tags: int | None = None) -> None:
    if emissions.dim() != 3:
        raise ValueError(f"emissions must have dimension of 3, got {emissions.dim()}")
    if num_tags is not None and emissions.size(2) != num_tags:
        raise ValueError(
            f"expected last dimension of emissions is {num_tags}, got {emissions.size(2)}"
        )


def _check_shape(name: str, tensor: Tensor | None, expected: tuple[int, ...]) -> None:
    if tensor is not None and tuple(tensor.shape) != expected:
        raise ValueError(f"{name} must have shape {expected}, got {tuple(tensor.shape)}")


def _constrained_scores(
    num_tags: int,
    start_transitions: Tensor,
    transitions: Tensor,
    end_transitions: Tensor,
    start_allowed: Tensor | None,
    trans_allowed: Tensor | None,
    end_allowed: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor]:
    _check_shape("start_transitions", start_transitions, (num_tags,))
    _check_shape("transitions", transitions, (num_tags, num_tags))
    _check_shape("end_transitions", end_transitions, (num_tags,))
    _check_shape("start_allowed", start_allowed, (num_tags,))
    _check_shape("trans_allowed", trans_allowed, (num_tags, num_tags))
    _check_shape("end_allowed", end_allowed, (num_tags,))
    # Unconstrained inputs pass through untouched so the float ops match torchcrf exactly.
    if start_allowed is not None:
        start_transitions = start_transitions.masked_fill(~start_allowed.bool(), FORBIDDEN_SCORE)
    if trans_allowed is not None:
        transitions = transitions.masked_fill(~trans_allowed.bool(), FORBIDDEN_SCORE)
    if end_allowed is not None:
        end_transitions = end_transitions.masked_fill(~end_allowed.bool(), FORBIDDEN_SCORE)
    return start_transitions, transitions, end_transitions


@torch.no_grad()
def viterbi_decode(
    emissions: Tensor,
    mask: Tensor,
    start_transitions: Tensor,
    transitions: Tensor,
    end_transitions: Tensor,
    start_allowed: Tensor | None = None,
    trans_allowed: Tensor | None = None,
    end_allowed: Tensor | None = None,
) -> list[list[int]]:
    """Find the best tag path of every sequence with a batched Viterbi.

    Without constraint masks the result is identical to ``torchcrf.CRF.decode`` with the same
    parameters: the recursion uses the same float operations in the same order, and ties are
    broken the way ``torch.max`` breaks them (first maximal index). Prediction decodes the ONNX
    export's emissions with the numpy twin, :func:`complex_ner.domain.models.numpy_crf.viterbi`.

    Args:
        emissions: Scores of shape ``(batch, seq_len, num_tags)``.
        mask: Prefix mask of shape ``(batch, seq_len)`` with ``mask[:, 0]`` all on.
        start_transitions: Shape ``(num_tags,)``.
        transitions: Shape ``(num_tags, num_tags)`` indexed ``[from, to]``.
        end_transitions: Shape ``(num_tags,)``.
        start_allowed: Optional bool mask ``(num_tags,)``; disallowed starts are forbidden.
        trans_allowed: Optional bool mask ``(num_tags, num_tags)``.
        end_allowed: Optional bool mask ``(num_tags,)``.

    Returns:
        One list of tag ids per sequence, of length ``mask[b].sum()``.

    Raises:
        ValueError: On inconsistent shapes or an invalid mask.
    """
    _check_emissions(emissions)
    batch_size, seq_len, num_tags = emissions.shape
    mask = as_bool_mask(mask, (batch_size, seq_len))
    start, trans, end = _constrained_scores(
        num_tags,
        start_transitions,
        transitions,
        end_transitions,
        start_allowed,
        trans_allowed,
        end_allowed,
    )
    if batch_size == 0:
        return []
    return _viterbi_torch(emissions, mask, start, trans, end)


def _viterbi_torch(
    emissions: Tensor, mask: Tensor, start: Tensor, trans: Tensor, end: Tensor
) -> list[list[int]]:
    """Batched Viterbi as a loop of torch operations per word (any device, any float dtype).

    Args:
        emissions: Shape ``(batch, seq_len, num_tags)``, ``batch >= 1``.
        mask: Validated bool prefix mask of shape ``(batch, seq_len)``.
        start: Constraint-masked start scores, shape ``(num_tags,)``.
        trans: Constraint-masked transition scores, shape ``(num_tags, num_tags)``.
        end: Constraint-masked end scores, shape ``(num_tags,)``.

    Returns:
        One list of tag ids per sequence.
    """
    batch_size, seq_len, _ = emissions.shape
    # shape: (batch,)
    lengths = mask.sum(dim=1).tolist()
    shortest = min(lengths)
    # shape: (batch, num_tags) per timestep
    steps = emissions.unbind(1)
    # shape: (batch, 1) per timestep; only needed once the shortest sequence has ended
    on = mask.unsqueeze(2).unbind(1) if shortest < seq_len else ()
    # shape: (batch, num_tags)
    score = start + steps[0]
    history: list[Tensor] = []
    for i in range(1, seq_len):
        # Same association order as torchcrf ((score + trans) + emission) for identical floats.
        # shape: (batch, num_tags, num_tags) indexed [batch, from, to]
        next_score = score.unsqueeze(2) + trans + steps[i].unsqueeze(1)
        # shape: (batch, num_tags) each
        next_score, indices = next_score.max(dim=1)
        # Padded steps carry the score over, so the final score is the one at the sequence end.
        # While every sequence is still running that where would return next_score unchanged.
        score = next_score if i < shortest else torch.where(on[i], next_score, score)
        history.append(indices)
    # shape: (batch,)
    best_last = (score + end).argmax(dim=1)
    if not history:
        return [[tag] for tag in best_last.tolist()]
    if batch_size <= _PYTHON_BACKTRACK_MAX_BATCH:
        return _backtrack_lists(torch.stack(history).tolist(), best_last.tolist(), lengths)
    return _backtrack_numpy(
        torch.stack(history).cpu().numpy(), best_last.cpu().numpy(), mask, lengths
    )


# At or below this batch size a plain Python walk beats one NumPy fancy index per timestep.
_PYTHON_BACKTRACK_MAX_BATCH = 8


def _backtrack_lists(
    history: list[list[list[int]]], best_last: list[int], lengths: list[int]
) -> list[list[int]]:
    """Walk back ``history[t][b][tag_at_t+1] -> tag_at_t`` from each sequence's own end."""
    paths = []
    for b, tag in enumerate(best_last):
        path = [tag]
        for t in range(lengths[b] - 2, -1, -1):
            tag = history[t][b][tag]
            path.append(tag)
        path.reverse()
        paths.append(path)
    return paths


def _backtrack_numpy(
    history: np.ndarray, best_last: np.ndarray, mask: Tensor, lengths: list[int]
) -> list[list[int]]:
    """Batched backtrack over ``history`` of shape ``(seq_len - 1, batch, num_tags)``."""
    steps, batch_size, num_tags = history.shape
    # Past a sequence's end its score was carried over unchanged, so its best last tag must be
    # carried back unchanged too: make those padded steps the identity map.
    # shape: (seq_len - 1, batch)
    padded = ~mask[:, 1:].t().cpu().numpy()
    if padded.any():
        history[padded] = np.arange(num_tags, dtype=history.dtype)
    rows = np.arange(batch_size)
    # shape: (seq_len, batch)
    best = np.empty((steps + 1, batch_size), dtype=history.dtype)
    current = best_last.astype(history.dtype, copy=False)
    best[steps] = current
    for t in range(steps - 1, -1, -1):
        current = history[t, rows, current]
        best[t] = current
    return [row[:length] for row, length in zip(best.T.tolist(), lengths, strict=True)]


def crf_marginals(
    emissions: Tensor,
    mask: Tensor,
    start_transitions: Tensor,
    transitions: Tensor,
    end_transitions: Tensor,
    start_allowed: Tensor | None = None,
    trans_allowed: Tensor | None = None,
    end_allowed: Tensor | None = None,
) -> Tensor:
    """Compute per-position tag marginals by forward-backward in log space.

    Args:
        emissions: Scores of shape ``(batch, seq_len, num_tags)``.
        mask: Prefix mask of shape ``(batch, seq_len)`` with ``mask[:, 0]`` all on.
        start_transitions: Shape ``(num_tags,)``.
        transitions: Shape ``(num_tags, num_tags)`` indexed ``[from, to]``.
        end_transitions: Shape ``(num_tags,)``.
        start_allowed: Optional bool mask ``(num_tags,)``.
        trans_allowed: Optional bool mask ``(num_tags, num_tags)``.
        end_allowed: Optional bool mask ``(num_tags,)``.

    Returns:
        Probabilities of shape ``(batch, seq_len, num_tags)``; each valid position sums to 1 and
        padding positions are 0.

    Raises:
        ValueError: On inconsistent shapes or an invalid mask.
    """
    _check_emissions(emissions)
    batch_size, seq_len, num_tags = emissions.shape
    mask = as_bool_mask(mask, (batch_size, seq_len))
    start, trans, end = _constrained_scores(
        num_tags,
        start_transitions,
        transitions,
        end_transitions,
        start_allowed,
        trans_allowed,
        end_allowed,
    )

    # With a prefix mask, alpha at a valid position only depends on earlier valid positions,
    # so the forward pass needs no masking; padded alphas are discarded at the end.
    # shape: (batch, num_tags)
    alpha = start + emissions[:, 0]
    alphas = [alpha]
    for i in range(1, seq_len):
        # shape: (batch, num_tags, num_tags) indexed [batch, from, to]
        next_alpha = alpha.unsqueeze(2) + trans + emissions[:, i].unsqueeze(1)
        alpha = torch.logsumexp(next_alpha, dim=1)
        alphas.append(alpha)

    # shape: (batch, num_tags)
    beta = end.expand(batch_size, num_tags)
    betas = [beta]
    for t in range(seq_len - 2, -1, -1):
        # shape: (batch, num_tags, num_tags) indexed [batch, from, to]
        next_beta = trans + (emissions[:, t + 1] + beta).unsqueeze(1)
        # The last valid position of a sequence (next step padded) restarts from the end scores.
        beta = torch.where(mask[:, t + 1].unsqueeze(1), torch.logsumexp(next_beta, dim=2), end)
        betas.append(beta)
    betas.reverse()

    # shape: (batch, seq_len, num_tags)
    log_alpha = torch.stack(alphas, dim=1)
    log_beta = torch.stack(betas, dim=1)
    # Every valid position sums alpha * beta to the same partition function, so a per-position
    # softmax equals exp(alpha + beta - log Z) but keeps float32 sums at 1 on long sequences.
    # shape: (batch, seq_len, num_tags)
    marginals = torch.softmax(log_alpha + log_beta, dim=2)
    return marginals.masked_fill(~mask.unsqueeze(2), 0.0)


class ConstrainedCRF(nn.Module):
    """A pytorch-crf CRF whose decoding and marginals respect the BIO scheme.

    Training uses torchcrf's unconstrained log-likelihood and its parameter initialisation;
    the BIO constraints only apply in :meth:`decode` and :meth:`marginals` (when ``constrain``
    is true), by giving forbidden starts and transitions a score of :data:`FORBIDDEN_SCORE`.

    Args:
        tags: BIO tag names indexed by tag id.
        constrain: Whether decoding and marginals forbid invalid BIO transitions.
    """

    start_allowed: Tensor
    trans_allowed: Tensor
    end_allowed: Tensor

    def __init__(self, tags: Sequence[str], constrain: bool = True) -> None:
        super().__init__()
        start_allowed, trans_allowed, end_allowed = bio_transition_masks(tags)
        self.tags: tuple[str, ...] = tuple(tags)
        self.num_tags = len(self.tags)
        self.constrain = constrain
        self.crf = CRF(self.num_tags, batch_first=True)
        # Not persistent: they derive from the tag list, which the checkpoint config carries.
        self.register_buffer("start_allowed", start_allowed, persistent=False)
        self.register_buffer("trans_allowed", trans_allowed, persistent=False)
        self.register_buffer("end_allowed", end_allowed, persistent=False)

    def extra_repr(self) -> str:
        return f"num_tags={self.num_tags}, constrain={self.constrain}"

    def _validate(self, emissions: Tensor, mask: Tensor, tags: Tensor | None = None) -> Tensor:
        _check_emissions(emissions, self.num_tags)
        if tags is not None and tuple(tags.shape) != tuple(emissions.shape[:2]):
            raise ValueError(
                "the first two dimensions of emissions and tags must match, "
                f"got {tuple(emissions.shape[:2])} and {tuple(tags.shape)}"
            )
        return as_bool_mask(mask, emissions.shape[:2])

    def _constraints(self) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        if not self.constrain:
            return None, None, None
        return self.start_allowed, self.trans_allowed, self.end_allowed

    def loss(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """Mean negative log-likelihood over the batch (torchcrf, unconstrained).

        Args:
            emissions: Shape ``(batch, seq_len, num_tags)``.
            tags: Gold tag ids of shape ``(batch, seq_len)``; padded positions are ignored and
                may hold any value (e.g. ``-100``).
            mask: Prefix mask of shape ``(batch, seq_len)``.

        Returns:
            A scalar tensor.

        Raises:
            ValueError: On inconsistent shapes, an invalid mask or out-of-range tags.
        """
        mask = self._validate(emissions, mask, tags)
        tags = tags.long()
        valid_tags = tags[mask]
        if valid_tags.numel() and bool(((valid_tags < 0) | (valid_tags >= self.num_tags)).any()):
            raise ValueError(f"tags at unmasked positions must be in [0, {self.num_tags})")
        # torchcrf indexes its parameters with every tag, padding included, so ignore labels
        # there must become a real id; the mask zeroes their contribution anyway.
        tags = tags.masked_fill(~mask, 0)
        return -self.crf(emissions, tags, mask, reduction="mean")

    def decode(self, emissions: Tensor, mask: Tensor) -> list[list[int]]:
        """Best tag path per sequence (BIO-constrained if ``constrain``).

        Args:
            emissions: Shape ``(batch, seq_len, num_tags)``.
            mask: Prefix mask of shape ``(batch, seq_len)``.

        Returns:
            One list of tag ids per sequence, of length ``mask[b].sum()``.
        """
        mask = self._validate(emissions, mask)
        return viterbi_decode(
            emissions,
            mask,
            self.crf.start_transitions,
            self.crf.transitions,
            self.crf.end_transitions,
            *self._constraints(),
        )

    def marginals(self, emissions: Tensor, mask: Tensor) -> Tensor:
        """Per-position tag marginals (BIO-constrained if ``constrain``).

        Args:
            emissions: Shape ``(batch, seq_len, num_tags)``.
            mask: Prefix mask of shape ``(batch, seq_len)``.

        Returns:
            Probabilities of shape ``(batch, seq_len, num_tags)``, 0 at padding.
        """
        mask = self._validate(emissions, mask)
        return crf_marginals(
            emissions,
            mask,
            self.crf.start_transitions,
            self.crf.transitions,
            self.crf.end_transitions,
            *self._constraints(),
        )
