"""The BIO (IOB2) tag scheme: tag sets, tag parsing, allowed transitions, repair and spans.

Every rule of the scheme lives here once; the CRF, the heads, the data gate, the metrics, the
statistics and the prediction path all call it. The scheme is strict IOB2, as MultiCoNER and
seqeval 1.2.2's ``mode="strict"`` use it: an entity starts only at ``B-X`` and continues over
``I-X`` of the same type, so an ``I-X`` that does not continue an ``X`` entity is invalid and
starts no entity.

Pure Python on purpose: the prediction path must not pay seqeval's import (it pulls in
scikit-learn, about a second). ``tests/unit/test_bio.py`` checks :func:`entity_spans` against
``seqeval.scheme.Entities(..., IOB2)`` on random tag sequences.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

__all__ = [
    "BEGIN",
    "INSIDE",
    "OUTSIDE",
    "Span",
    "TransitionTable",
    "allowed_after",
    "entity_spans",
    "majority_spans",
    "parse_tag",
    "repair",
    "tag_set",
    "tags_from_spans",
    "transition_table",
]

OUTSIDE = "O"
BEGIN = "B"
INSIDE = "I"

#: ``(entity_type, start, end_exclusive)`` in token positions.
Span = tuple[str, int, int]


class TransitionTable(NamedTuple):
    """Which tags may start a sentence, follow each other and end a sentence.

    Attributes:
        start: ``start[j]``: tag ``j`` may open a sentence.
        pairs: ``pairs[i][j]``: tag ``j`` may follow tag ``i``.
        end: ``end[i]``: tag ``i`` may close a sentence.
    """

    start: tuple[bool, ...]
    pairs: tuple[tuple[bool, ...], ...]
    end: tuple[bool, ...]


def tag_set(entity_types: Sequence[str]) -> tuple[str, ...]:
    """The BIO tag set of some entity types: ``O`` first, then ``B-X``, ``I-X`` per type."""
    return (OUTSIDE,) + tuple(f"{p}-{t}" for t in entity_types for p in (BEGIN, INSIDE))


def parse_tag(tag: str) -> tuple[str, str | None]:
    """Split a BIO tag into its prefix and entity type.

    Args:
        tag: ``"O"``, ``"B-<type>"`` or ``"I-<type>"``.

    Returns:
        ``("O", None)`` or ``(prefix, type)`` with prefix ``"B"`` or ``"I"``.

    Raises:
        ValueError: If the tag does not follow the BIO scheme.
    """
    if tag == OUTSIDE:
        return OUTSIDE, None
    if len(tag) > 2 and tag[0] in (BEGIN, INSIDE) and tag[1] == "-":
        return tag[0], tag[2:]
    raise ValueError(f"invalid BIO tag {tag!r}; expected 'O', 'B-<type>' or 'I-<type>'")


def allowed_after(previous: str | None, tag: str) -> bool:
    """Whether ``tag`` may follow ``previous`` (``None``: the start of a sentence).

    The scheme's one constraint: ``I-X`` only continues ``B-X`` or ``I-X``. So it may not open a
    sentence, nor follow ``O`` or a tag of another type. Any tag may end a sentence.

    Raises:
        ValueError: If either tag does not follow the BIO scheme.
    """
    prefix, entity_type = parse_tag(tag)
    previous_type = None if previous is None else parse_tag(previous)[1]
    return prefix != INSIDE or previous_type == entity_type


@functools.lru_cache(maxsize=64)
def _transition_table(tags: tuple[str, ...]) -> TransitionTable:
    if len(tags) == 0:
        raise ValueError("tags must not be empty")
    if len(set(tags)) != len(tags):
        raise ValueError(f"tags must be unique, got {list(tags)}")
    return TransitionTable(
        start=tuple(allowed_after(None, tag) for tag in tags),
        pairs=tuple(tuple(allowed_after(prev, tag) for tag in tags) for prev in tags),
        end=(True,) * len(tags),
    )


def transition_table(tags: Sequence[str]) -> TransitionTable:
    """The allowed start, transition and end table of a tag set, indexed by tag id.

    Args:
        tags: The tag names, indexed by tag id.

    Raises:
        ValueError: If ``tags`` is empty, has duplicates or holds a non-BIO tag.
    """
    return _transition_table(tuple(tags))


@functools.lru_cache(maxsize=64)
def _begin_ids(tags: tuple[str, ...]) -> dict[str, int]:
    return {kind: i for i, (prefix, kind) in enumerate(map(parse_tag, tags)) if prefix == BEGIN}


def repair(tag_ids: Sequence[int], tags: Sequence[str]) -> list[int]:
    """Turn a tag-id sequence into valid BIO with the standard fix: a misplaced ``I-X`` -> ``B-X``.

    Args:
        tag_ids: Tag ids of one sequence.
        tags: Tag names indexed by tag id.

    Returns:
        The repaired tag ids (a new list); only misplaced ``I-X`` ids change.

    Raises:
        ValueError: If an id is out of range, ``tags`` is not a BIO tag set (see
            :func:`transition_table`), or an ``I-X`` needing repair has no ``B-X`` in ``tags``.
    """
    key = tuple(tags)
    table = _transition_table(key)
    repaired: list[int] = []
    previous: int | None = None
    for tag_id in tag_ids:
        if not 0 <= tag_id < len(key):
            raise ValueError(f"tag id {tag_id} out of range for {len(key)} tags")
        allowed = table.start[tag_id] if previous is None else table.pairs[previous][tag_id]
        if not allowed:
            entity_type = parse_tag(key[tag_id])[1]
            begin = _begin_ids(key).get(entity_type or "")
            if begin is None:
                raise ValueError(
                    f"cannot repair {key[tag_id]!r}: tag set has no '{BEGIN}-{entity_type}'"
                )
            tag_id = begin
        repaired.append(tag_id)
        previous = tag_id
    return repaired


def entity_spans(tags: Sequence[str]) -> list[Span]:
    """Entities of one sentence as seqeval's strict IOB2 mode sees them.

    An entity is a ``B-X`` followed by any ``I-X``; an ``I-X`` that does not continue an open
    ``X`` entity starts none. A tag that is neither ``B-...`` nor ``I-...`` counts as ``O``
    rather than raising, so the data gate can still list the entities of a malformed file.

    Args:
        tags: IOB2 tags of one sentence.

    Returns:
        ``(type, start, end_exclusive)`` for every entity, in order.
    """
    spans: list[Span] = []
    start, kind = -1, ""
    # A trailing O closes the last entity.
    for i, tag in enumerate([*tags, OUTSIDE]):
        prefix, _, entity_type = tag.partition("-")
        if start >= 0 and prefix == INSIDE and entity_type == kind:
            continue
        if start >= 0:
            spans.append((kind, start, i))
        start, kind = (i, entity_type) if prefix == BEGIN else (-1, "")
    return spans


def tags_from_spans(length: int, spans: Sequence[Span]) -> list[str]:
    """The IOB2 tags of a sentence of ``length`` tokens holding the given entities.

    The inverse of :func:`entity_spans`: ``entity_spans(tags_from_spans(n, s)) == s`` for spans
    in order.

    Args:
        length: Number of tokens.
        spans: ``(type, start, end_exclusive)`` per entity; they may not overlap.

    Raises:
        ValueError: If a span is empty, out of ``range(length)`` or overlaps another.
    """
    tags = [OUTSIDE] * length
    for entity_type, start, end in spans:
        if not 0 <= start < end <= length:
            raise ValueError(
                f"entity span ({entity_type!r}, {start}, {end}) is empty or outside "
                f"a sentence of {length} tokens"
            )
        if any(tag != OUTSIDE for tag in tags[start:end]):
            raise ValueError(f"entity span ({entity_type!r}, {start}, {end}) overlaps another")
        tags[start] = f"{BEGIN}-{entity_type}"
        tags[start + 1 : end] = [f"{INSIDE}-{entity_type}"] * (end - start - 1)
    return tags


def majority_spans(predictions: Sequence[Sequence[str]]) -> list[str]:
    """The entities that more than half of several taggers predicted, as one sentence's tags.

    Each tagger's entities never overlap, so two entities that each won a majority cannot
    overlap either (some tagger would have predicted both): no tie-breaking is needed.

    Args:
        predictions: Per tagger, the IOB2 tags of the same sentence (all of the same length).

    Raises:
        ValueError: No predictions, or predictions of different lengths.
    """
    if not predictions:
        raise ValueError("majority_spans needs at least one member's tags")
    length = len(predictions[0])
    if any(len(p) != length for p in predictions):
        raise ValueError(f"members tagged different lengths: {[len(p) for p in predictions]}")
    votes: dict[Span, int] = {}
    for tags in predictions:
        for span in entity_spans(tags):
            votes[span] = votes.get(span, 0) + 1
    won = sorted((s for s, n in votes.items() if 2 * n > len(predictions)), key=lambda s: s[1])
    return tags_from_spans(length, won)
