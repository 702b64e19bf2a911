"""Entity-mention replacement: extra training sentences whose entities are swapped for others.

A copy of a training sentence keeps its non-entity words and replaces every entity mention with
a mention of the same type drawn from the training set (Dai and Adel, 2020, "An Analysis of
Simple Data Augmentation for Named Entity Recognition"), so the model sees known contexts with
other names and cannot lean on memorised surface forms, which MultiCoNER's unseen, complex
entities punish. Mentions are word sequences, so for Chinese (one character per word) they are
character sequences; nothing here depends on the language.

Entities are read and written with :mod:`complex_ner.core.bio` (strict IOB2): a copy's tags are
rebuilt from its spans, ``B-X`` then ``I-X`` for the new length, and are valid BIO by
construction. The draws are seeded, so a seed and an epoch give the same copies every time.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import replace

from complex_ner.core.bio import Span, entity_spans, tags_from_spans
from complex_ner.domain.data import Sentence

__all__ = ["MentionBank", "MentionReplacer", "replace_mentions"]

Mention = tuple[str, ...]


class MentionBank:
    """The distinct entity mentions of each type, in the order they first occur.

    Distinct rather than weighted by frequency: a frequent name drawn over and over would
    re-teach the surface forms the replacement is meant to break.
    """

    def __init__(self, mentions: Mapping[str, Sequence[Mention]]) -> None:
        self.mentions: dict[str, tuple[Mention, ...]] = {
            kind: tuple(dict.fromkeys(tuple(m) for m in found))
            for kind, found in mentions.items()
            if found
        }
        if any(not m for found in self.mentions.values() for m in found):
            raise ValueError("mentions must not be empty word sequences")

    @classmethod
    def collect(cls, sentences: Sequence[Sentence]) -> MentionBank:
        """The mentions of labelled ``sentences`` (unlabelled ones hold none)."""
        found: dict[str, list[Mention]] = {}
        for s in sentences:
            for kind, start, end in entity_spans(s.tags or ()):
                found.setdefault(kind, []).append(s.tokens[start:end])
        return cls(found)

    def draw(self, kind: str, current: Mention, rng: random.Random) -> Mention:
        """A random mention of ``kind``, other than ``current`` when the type has another."""
        pool = self.mentions.get(kind, ())
        others = [m for m in pool if m != current] or [current]
        return others[rng.randrange(len(others))]


def replace_mentions(sentence: Sentence, bank: MentionBank, rng: random.Random) -> Sentence:
    """A copy of ``sentence`` with every entity mention replaced by one of the same type.

    Words outside entities are kept; tags are rebuilt from the new spans (an ``I-X`` that opens
    no entity in strict IOB2 is no entity, so it becomes ``O``).

    Raises:
        ValueError: ``sentence`` has no tags.
    """
    if sentence.tags is None:
        raise ValueError(f"sentence {sentence.id!r} has no tags to augment")
    tokens: list[str] = []
    spans: list[Span] = []
    position = 0
    for kind, start, end in entity_spans(sentence.tags):
        tokens += sentence.tokens[position:start]
        mention = bank.draw(kind, sentence.tokens[start:end], rng)
        spans.append((kind, len(tokens), len(tokens) + len(mention)))
        tokens += mention
        position = end
    tokens += sentence.tokens[position:]
    tags = tags_from_spans(len(tokens), spans)
    return replace(sentence, tokens=tuple(tokens), tags=tuple(tags))


class MentionReplacer:
    """Per-epoch mention-replaced copies of a share of the training sentences.

    Only sentences with at least one entity are candidates (a copy of one without entities would
    repeat it unchanged): ``round(share * candidates)`` of them get one copy each, chosen and
    filled anew for every ``(seed, epoch)``.

    Args:
        sentences: The labelled training sentences; the mentions are collected from them.
        share: Share of the candidate sentences copied per epoch, in [0, 1].
        seed: With the epoch, seeds the choice of sentences and mentions.

    Raises:
        ValueError: ``share`` is outside [0, 1].
    """

    def __init__(self, sentences: Sequence[Sentence], share: float, seed: int) -> None:
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"train.augment.mention_replace: {share} is not in [0, 1]")
        self.sentences = list(sentences)
        self.share = share
        self.seed = seed
        self.bank = MentionBank.collect(self.sentences)
        self.candidates = [i for i, s in enumerate(self.sentences) if entity_spans(s.tags or ())]

    @property
    def copies_per_epoch(self) -> int:
        return round(self.share * len(self.candidates))

    def copies(self, epoch: int) -> list[Sentence]:
        """The copies of one epoch, in training-set order; ids get ``+mr<epoch>``."""
        # A string seed is hashed with SHA-512: stable across runs and processes.
        rng = random.Random(f"mention-replace:{self.seed}:{epoch}")
        chosen = sorted(rng.sample(self.candidates, self.copies_per_epoch))
        out = []
        for i in chosen:
            copy = replace_mentions(self.sentences[i], self.bank, rng)
            out.append(replace(copy, id=f"{copy.id}+mr{epoch}"))
        return out
