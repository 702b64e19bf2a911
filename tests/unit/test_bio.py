"""Tests of the BIO scheme: tag sets, transitions, repair and strict IOB2 spans."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

import pytest

from complex_ner.core.bio import (
    allowed_after,
    entity_spans,
    parse_tag,
    repair,
    tag_set,
    tags_from_spans,
    transition_table,
)

SMALL_TAGS = tag_set(["A", "B"])
TAGS = tag_set(["PER", "LOC", "GRP", "CORP", "PROD", "CW"])


def seqeval_spans(sentences: Sequence[Sequence[str]]) -> list[list[tuple[str, int, int]]]:
    """The reference: seqeval 1.2.2's strict IOB2 entities."""
    from seqeval.scheme import IOB2, Entities

    entities = Entities([list(s) for s in sentences], IOB2).entities
    return [[(e.tag, e.start, e.end) for e in sent] for sent in entities]


def seqeval_valid(sentence: Sequence[str]) -> bool:
    """Valid IOB2 by the reference: every B-/I- token lies inside a strict seqeval entity."""
    covered = {i for _, start, end in seqeval_spans([sentence])[0] for i in range(start, end)}
    return all(tag == "O" or i in covered for i, tag in enumerate(sentence))


def random_tags(rng: random.Random, n: int, types: Sequence[str]) -> list[str]:
    """Random tags, stray and type-switching ``I-X`` included."""
    return [
        rng.choice(["O", "O", f"B-{rng.choice(types)}", f"I-{rng.choice(types)}"]) for _ in range(n)
    ]


def table_valid(ids: Sequence[int], tags: Sequence[str]) -> bool:
    table = transition_table(tags)
    if not ids:
        return True
    return (
        table.start[ids[0]]
        and all(table.pairs[a][b] for a, b in itertools.pairwise(ids))
        and table.end[ids[-1]]
    )


def test_tag_set_parses_back_to_its_types() -> None:
    tags = tag_set(["PER", "LOC"])
    assert tags[0] == "O" and len(set(tags)) == len(tags) == 5
    parsed = [parse_tag(t) for t in tags[1:]]
    assert sorted(parsed) == [("B", "LOC"), ("B", "PER"), ("I", "LOC"), ("I", "PER")]


@pytest.mark.parametrize("bad", ["X-PER", "B-", "I", "b-PER", "BPER", "", "O-"])
def test_parse_tag_rejects_non_bio(bad: str) -> None:
    with pytest.raises(ValueError, match=f"invalid BIO tag {bad!r}"):
        parse_tag(bad)


def test_transition_table_matches_brute_force_over_all_short_sequences() -> None:
    # Every sequence up to length 4 is valid by the table exactly when seqeval's strict IOB2
    # reading leaves no B-/I- token outside an entity.
    for length in range(1, 5):
        for ids in itertools.product(range(len(SMALL_TAGS)), repeat=length):
            tags = [SMALL_TAGS[i] for i in ids]
            assert table_valid(ids, SMALL_TAGS) == seqeval_valid(tags), tags


def test_allowed_after_agrees_with_table() -> None:
    table = transition_table(TAGS)
    assert list(table.start) == [allowed_after(None, t) for t in TAGS]
    for i, prev in enumerate(TAGS):
        assert list(table.pairs[i]) == [allowed_after(prev, t) for t in TAGS]
    assert all(table.end)


def test_transition_table_rejects_bad_tag_sets() -> None:
    with pytest.raises(ValueError, match="tags must not be empty"):
        transition_table([])
    with pytest.raises(ValueError, match="tags must be unique"):
        transition_table(["O", "B-A", "O"])
    with pytest.raises(ValueError, match="invalid BIO tag 'X'"):
        transition_table(["O", "X"])


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        ([], []),
        ([0, 0], [0, 0]),
        ([2], [1]),  # I-A at the start
        ([0, 2, 2], [0, 1, 2]),  # I-A after O
        ([1, 2, 2], [1, 2, 2]),  # already valid
        ([1, 4], [1, 3]),  # I-B after B-A
        ([3, 4, 2, 2], [3, 4, 1, 2]),  # I-A after I-B
        ([1, 1, 2, 3, 0], [1, 1, 2, 3, 0]),
    ],
)
def test_repair(ids: list[int], expected: list[int]) -> None:
    repaired = repair(ids, SMALL_TAGS)
    assert repaired == expected
    assert table_valid(repaired, SMALL_TAGS)


def test_repair_errors() -> None:
    with pytest.raises(ValueError, match="tag id 5 out of range for 5 tags"):
        repair([0, 5], SMALL_TAGS)
    with pytest.raises(ValueError, match="cannot repair 'I-C': tag set has no 'B-C'"):
        repair([1], ["O", "I-C"])
    with pytest.raises(ValueError, match="invalid BIO tag 'X'"):
        repair([0], ["O", "X"])


def test_repair_random_yields_valid_bio_and_changes_only_misplaced_inside_tags() -> None:
    rng = random.Random(2)
    for _ in range(300):
        ids = [rng.randrange(len(TAGS)) for _ in range(rng.randint(0, 12))]
        repaired = repair(ids, TAGS)
        assert seqeval_valid([TAGS[i] for i in repaired])
        assert repair(repaired, TAGS) == repaired  # valid input is left alone
        for before, after in zip(ids, repaired, strict=True):
            if before != after:
                # Only I-X changes, and only into B-X.
                assert parse_tag(TAGS[before]) == ("I", parse_tag(TAGS[after])[1])
                assert parse_tag(TAGS[after])[0] == "B"


def test_entity_spans_match_seqeval_on_random_sequences() -> None:
    rng = random.Random(0)
    for types in (["PER"], ["PER", "LOC", "GRP"]):
        sentences = [random_tags(rng, rng.randint(0, 15), types) for _ in range(2000)]
        assert [entity_spans(s) for s in sentences] == seqeval_spans(sentences)


def test_entity_spans_strict_reading() -> None:
    # A stray I-X starts nothing; a type switch ends the entity and the orphan starts nothing.
    assert entity_spans(["I-PER", "I-PER", "O"]) == []
    assert entity_spans(["B-PER", "I-LOC", "I-LOC"]) == [("PER", 0, 1)]
    assert entity_spans(["B-PER", "B-PER", "I-PER"]) == [("PER", 0, 1), ("PER", 1, 3)]
    assert entity_spans([]) == []
    # Malformed tags count as O rather than raising, so the data gate can still report them.
    assert entity_spans(["B-PER", "X", "I-PER", "B-LOC"]) == [("PER", 0, 1), ("LOC", 3, 4)]


def test_tags_from_spans_inverts_entity_spans() -> None:
    rng = random.Random(1)
    for _ in range(300):
        repaired = repair([rng.randrange(len(TAGS)) for _ in range(rng.randint(0, 12))], TAGS)
        tags = [TAGS[i] for i in repaired]
        assert tags_from_spans(len(tags), entity_spans(tags)) == tags
    assert tags_from_spans(4, [("LOC", 1, 3)]) == ["O", "B-LOC", "I-LOC", "O"]


@pytest.mark.parametrize(
    ("spans", "message"),
    [
        ([("PER", 2, 2)], "empty or outside"),
        ([("PER", 3, 5)], "empty or outside"),
        ([("PER", -1, 1)], "empty or outside"),
        ([("PER", 0, 2), ("LOC", 1, 3)], "overlaps another"),
    ],
)
def test_tags_from_spans_rejects_bad_spans(spans: list[tuple[str, int, int]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tags_from_spans(4, spans)
