"""CRF inference in plain numpy: BIO-constrained Viterbi paths and forward-backward marginals.

The prediction path (:mod:`complex_ner.engines.onnx_tagger`) decodes the ONNX export's
emissions with these; it imports neither torch nor torchcrf. The recursions are those of
:mod:`complex_ner.domain.models.crf` (same association order ``(score + trans) + emission``,
first maximal index on ties, :data:`FORBIDDEN_SCORE` for forbidden moves), so on the same float32
emissions the paths are the torch CRF's.

Sequences are given by their lengths: every row of ``emissions`` is valid up to its length and
padding after it is ignored.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from complex_ner.core.bio import repair, transition_table

__all__ = [
    "FORBIDDEN_SCORE",
    "CRFScores",
    "argmax_repaired",
    "crf_marginals",
    "decode_marginals",
    "softmax_marginals",
    "viterbi",
]

# Finite rather than -inf: when every path is forbidden max/logsumexp still give finite scores
# and a valid argmax instead of NaN (see domain/models/crf.py, which uses the same value).
FORBIDDEN_SCORE: float = -1e9

# Floor for log(0): a tag no tagger gives any probability stays possible but never preferred.
_LOG_FLOOR = 1e-12


class CRFScores:
    """Start, transition and end scores of a linear-chain CRF, BIO constraints applied.

    Args:
        tags: BIO tag names indexed by tag id.
        start: Start scores, shape ``(num_tags,)``.
        transitions: Transition scores ``[from, to]``, shape ``(num_tags, num_tags)``.
        end: End scores, shape ``(num_tags,)``.
        constrain: Whether forbidden BIO moves get :data:`FORBIDDEN_SCORE`.

    Raises:
        ValueError: a score array has the wrong shape, or ``tags`` is not a BIO tag set
            (with ``constrain``).
    """

    def __init__(
        self,
        tags: Sequence[str],
        start: np.ndarray,
        transitions: np.ndarray,
        end: np.ndarray,
        constrain: bool = True,
    ) -> None:
        num_tags = len(tags)
        for name, array, shape in (
            ("start", start, (num_tags,)),
            ("transitions", transitions, (num_tags, num_tags)),
            ("end", end, (num_tags,)),
        ):
            if tuple(array.shape) != shape:
                raise ValueError(f"{name} must have shape {shape}, got {tuple(array.shape)}")
        self.tags = tuple(tags)
        # shape: (num_tags,), (num_tags, num_tags), (num_tags,)
        self.start = np.asarray(start, dtype=np.float32).copy()
        self.transitions = np.asarray(transitions, dtype=np.float32).copy()
        self.end = np.asarray(end, dtype=np.float32).copy()
        if constrain:
            table = transition_table(tags)
            self.start[~np.array(table.start)] = FORBIDDEN_SCORE
            self.transitions[~np.array(table.pairs)] = FORBIDDEN_SCORE
            self.end[~np.array(table.end)] = FORBIDDEN_SCORE


def _check(emissions: np.ndarray, lengths: Sequence[int], num_tags: int) -> np.ndarray:
    """Validate ``emissions`` against ``lengths``; the lengths as an int array."""
    if emissions.ndim != 3:
        raise ValueError(f"emissions must have dimension of 3, got {emissions.ndim}")
    if emissions.shape[2] != num_tags:
        raise ValueError(
            f"expected last dimension of emissions is {num_tags}, got {emissions.shape[2]}"
        )
    # shape: (batch,)
    lens = np.asarray(lengths, dtype=np.int64)
    if lens.shape != (emissions.shape[0],):
        raise ValueError(f"lengths must have shape ({emissions.shape[0]},), got {lens.shape}")
    if lens.size and (lens.min() < 1 or lens.max() > emissions.shape[1]):
        raise ValueError(f"lengths must be in [1, {emissions.shape[1]}], got {lens.tolist()}")
    return lens


def viterbi(emissions: np.ndarray, lengths: Sequence[int], crf: CRFScores) -> list[list[int]]:
    """The best tag path of every sequence (batched over sequences, one loop over time).

    Args:
        emissions: Shape ``(batch, seq_len, num_tags)``.
        lengths: Valid length of each row, each in ``[1, seq_len]``.
        crf: The CRF's scores.

    Returns:
        One list of tag ids per sequence, of its length.
    """
    lens = _check(emissions, lengths, len(crf.tags))
    batch, seq_len, num_tags = emissions.shape
    if batch == 0:
        return []
    # float32 as the torch CRF scores; float64 kept (averaged marginals' logarithms).
    em = emissions if emissions.dtype == np.float64 else emissions.astype(np.float32, copy=False)
    # shape: (batch, num_tags)
    score = crf.start + em[:, 0]
    # shape: (seq_len - 1, batch, num_tags): best previous tag of each tag at each step
    history = np.empty((max(seq_len - 1, 0), batch, num_tags), dtype=np.int64)
    shortest = int(lens.min())
    identity = np.arange(num_tags)
    for t in range(1, seq_len):
        # shape: (batch, num_tags, num_tags) indexed [batch, from, to]
        nxt = (score[:, :, None] + crf.transitions[None]) + em[:, t, None, :]
        # shape: (batch, num_tags)
        best_from = nxt.argmax(axis=1)
        best = np.take_along_axis(nxt, best_from[:, None, :], axis=1)[:, 0]
        if t < shortest:
            score, history[t - 1] = best, best_from
            continue
        running = (t < lens)[:, None]
        # Past a sequence's end its score is carried over, so the end is scored at its length,
        # and backtracking through a padded step keeps the tag: the identity map.
        score = np.where(running, best, score)
        history[t - 1] = np.where(running, best_from, identity)
    # shape: (batch,)
    current = (score + crf.end).argmax(axis=1)
    rows = np.arange(batch)
    # shape: (seq_len, batch)
    best = np.empty((seq_len, batch), dtype=np.int64)
    best[seq_len - 1] = current
    for t in range(seq_len - 2, -1, -1):
        current = history[t, rows, current]
        best[t] = current
    return [row[:length] for row, length in zip(best.T.tolist(), lens.tolist(), strict=True)]


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    top = x.max(axis=axis, keepdims=True)
    return np.squeeze(top, axis) + np.log(np.exp(x - top).sum(axis=axis))


def crf_marginals(emissions: np.ndarray, lengths: Sequence[int], crf: CRFScores) -> np.ndarray:
    """Per-position tag marginals by forward-backward in log space.

    Args:
        emissions: Shape ``(batch, seq_len, num_tags)``.
        lengths: Valid length of each row, each in ``[1, seq_len]``.
        crf: The CRF's scores.

    Returns:
        Probabilities of shape ``(batch, seq_len, num_tags)``; each valid position sums to 1,
        padding is 0.
    """
    lens = _check(emissions, lengths, len(crf.tags))
    batch, seq_len, num_tags = emissions.shape
    em = emissions.astype(np.float32, copy=False)
    # shape: (batch, seq_len, num_tags)
    log_alpha = np.empty((batch, seq_len, num_tags), dtype=np.float32)
    log_beta = np.empty((batch, seq_len, num_tags), dtype=np.float32)
    log_alpha[:, 0] = crf.start + em[:, 0]
    for t in range(1, seq_len):
        # shape: (batch, num_tags, num_tags) indexed [batch, from, to]
        nxt = log_alpha[:, t - 1, :, None] + crf.transitions[None] + em[:, t, None, :]
        log_alpha[:, t] = _logsumexp(nxt, axis=1)
    log_beta[:, seq_len - 1] = crf.end
    for t in range(seq_len - 2, -1, -1):
        # shape: (batch, num_tags, num_tags) indexed [batch, from, to]
        nxt = crf.transitions[None] + (em[:, t + 1] + log_beta[:, t + 1])[:, None, :]
        # The last valid position of a sequence restarts from the end scores.
        log_beta[:, t] = np.where((t + 1 < lens)[:, None], _logsumexp(nxt, axis=2), crf.end)
    # Every valid position sums alpha * beta to the same partition function, so a per-position
    # softmax equals exp(alpha + beta - log Z) and keeps float32 sums at 1.
    joint = log_alpha + log_beta
    probs = np.exp(joint - joint.max(axis=2, keepdims=True))
    probs /= probs.sum(axis=2, keepdims=True)
    # shape: (batch, seq_len)
    valid = np.arange(seq_len)[None, :] < lens[:, None]
    return np.where(valid[:, :, None], probs, 0.0).astype(np.float32)


def softmax_marginals(emissions: np.ndarray, lengths: Sequence[int]) -> np.ndarray:
    """Token-level softmax ``(batch, seq_len, num_tags)``, 0 at padding (the linear head)."""
    lens = _check(emissions, lengths, emissions.shape[2] if emissions.ndim == 3 else 0)
    top = emissions.max(axis=2, keepdims=True)
    probs = np.exp(emissions - top)
    probs /= probs.sum(axis=2, keepdims=True)
    valid = np.arange(emissions.shape[1])[None, :] < lens[:, None]
    return np.where(valid[:, :, None], probs, 0.0).astype(np.float32)


def argmax_repaired(
    emissions: np.ndarray, lengths: Sequence[int], tags: Sequence[str]
) -> list[list[int]]:
    """Per-token argmax repaired to valid BIO (the linear head's decoding)."""
    lens = _check(emissions, lengths, len(tags))
    # shape: (batch, seq_len)
    best = emissions.argmax(axis=2)
    return [repair(row[:n], tags) for row, n in zip(best.tolist(), lens.tolist(), strict=True)]


def decode_marginals(
    marginals: Sequence[np.ndarray], tags: Sequence[str], batch_size: int = 64
) -> list[list[int]]:
    """The BIO-valid tag path of each sentence with the highest sum of log marginals.

    How an ensemble decodes its members' averaged marginals: no learnt transitions (each
    member's CRF already shaped its marginals), only the BIO constraints. Float64 throughout.

    Args:
        marginals: Per sentence, tag probabilities of shape ``(words, num_tags)``.
        tags: BIO tag names indexed by tag id.
        batch_size: Sentences per Viterbi batch.

    Returns:
        One list of tag ids per sentence (empty for a sentence without words).

    Raises:
        ValueError: A sentence's marginals are not ``(words, len(tags))``, or ``tags`` is not BIO.
    """
    num_tags = len(tags)
    for k, m in enumerate(marginals):
        if m.ndim != 2 or m.shape[1] != num_tags:
            raise ValueError(
                f"sentence {k}: marginals must have shape (words, {num_tags}), got {tuple(m.shape)}"
            )
    zeros = np.zeros(num_tags)
    no_transitions = CRFScores(tags, zeros, np.zeros((num_tags, num_tags)), zeros)
    out: list[list[int]] = [[] for _ in marginals]
    order = sorted((i for i, m in enumerate(marginals) if len(m)), key=lambda i: len(marginals[i]))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = len(marginals[idx[-1]])
        # shape: (batch, words, num_tags); padding past a sentence's length is ignored
        scores = np.zeros((len(idx), width, num_tags), dtype=np.float64)
        for row, i in enumerate(idx):
            scores[row, : len(marginals[i])] = np.log(
                np.maximum(np.asarray(marginals[i], dtype=np.float64), _LOG_FLOOR)
            )
        paths = viterbi(scores, [len(marginals[i]) for i in idx], no_transitions)
        for row, i in enumerate(idx):
            out[i] = paths[row]
    return out
