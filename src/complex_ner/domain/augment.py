"""Training-set augmentation: per-epoch extra copies of training sentences.

Two kinds, each switched on by its share in ``train.augment`` and combined by :func:`build`.

**Entity-mention replacement**: copies whose entities are swapped for others.

A copy of a training sentence keeps its non-entity words and replaces every entity mention with
a mention of the same type drawn from the training set (Dai and Adel, 2020, "An Analysis of
Simple Data Augmentation for Named Entity Recognition"), so the model sees known contexts with
other names and cannot lean on memorised surface forms, which MultiCoNER's unseen, complex
entities punish. Mentions are word sequences, so for Chinese (one character per word) they are
character sequences; nothing here depends on the language.

Entities are read and written with :mod:`complex_ner.core.bio` (strict IOB2): a copy's tags are
rebuilt from its spans, ``B-X`` then ``I-X`` for the new length, and are valid BIO by
construction. The draws are seeded, so a seed and an epoch give the same copies every time.

**Context crops**: copies cut down to one entity and at most a few words on each side
(:func:`entity_window`). The paper blames its test-set drop on questions and short search
queries, where an entity comes with little or no sentence around it; full training sentences
never show the model that case.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import replace

from complex_ner.core.bio import Span, entity_spans, tags_from_spans
from complex_ner.core.config import AugmentConfig
from complex_ner.domain.data import Sentence

__all__ = [
    "Augmentations",
    "ContextCropper",
    "MentionBank",
    "MentionReplacer",
    "build",
    "entity_window",
    "replace_mentions",
]

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


class _EpochCopies:
    """Per-epoch copies of a share of the training sentences that hold entities.

    Only sentences with at least one entity are candidates: ``round(share * candidates)`` of
    them get one copy each (:meth:`_copy`), chosen and made anew for every ``(seed, epoch)``.

    Raises:
        ValueError: ``share`` is outside [0, 1].
    """

    #: The ``train.augment`` key of the share (named in errors) and the seed's prefix.
    key = ""
    seed_prefix = ""
    #: Appended, with the epoch, to each copy's id.
    id_suffix = ""

    def __init__(self, sentences: Sequence[Sentence], share: float, seed: int) -> None:
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"train.augment.{self.key}: {share} is not in [0, 1]")
        self.sentences = list(sentences)
        self.share = share
        self.seed = seed
        self.spans = [entity_spans(s.tags or ()) for s in self.sentences]
        self.candidates = [i for i, spans in enumerate(self.spans) if spans]

    @property
    def copies_per_epoch(self) -> int:
        return round(self.share * len(self.candidates))

    def copies(self, epoch: int) -> list[Sentence]:
        """The copies of one epoch, in training-set order; ids get ``id_suffix<epoch>``."""
        # A string seed is hashed with SHA-512: stable across runs and processes.
        rng = random.Random(f"{self.seed_prefix}:{self.seed}:{epoch}")
        chosen = sorted(rng.sample(self.candidates, self.copies_per_epoch))
        out = []
        for i in chosen:
            copy = self._copy(i, rng)
            out.append(replace(copy, id=f"{copy.id}{self.id_suffix}{epoch}"))
        return out

    def _copy(self, index: int, rng: random.Random) -> Sentence:
        """The copy of training sentence ``index``."""
        raise NotImplementedError


class MentionReplacer(_EpochCopies):
    """Per-epoch mention-replaced copies of a share of the training sentences.

    A copy of a sentence without entities would repeat it unchanged, hence only sentences with
    entities are copied.

    Args:
        sentences: The labelled training sentences; the mentions are collected from them.
        share: Share of the candidate sentences copied per epoch, in [0, 1].
        seed: With the epoch, seeds the choice of sentences and mentions.

    Raises:
        ValueError: ``share`` is outside [0, 1].
    """

    key, seed_prefix, id_suffix = "mention_replace", "mention-replace", "+mr"

    def __init__(self, sentences: Sequence[Sentence], share: float, seed: int) -> None:
        super().__init__(sentences, share, seed)
        self.bank = MentionBank.collect(self.sentences)

    def _copy(self, index: int, rng: random.Random) -> Sentence:
        return replace_mentions(self.sentences[index], self.bank, rng)


def entity_window(sentence: Sentence, index: int, context: int) -> Sentence:
    """The ``index``-th gold entity of ``sentence`` with at most ``context`` words on each side.

    A window that would cut another gold entity is widened to hold all of it, so its tags are
    valid IOB2 and describe whole entities only. The id gets ``[start:end]``.

    Raises:
        ValueError: ``sentence`` has no tags, no entity ``index``, or ``context`` is negative.
    """
    if sentence.tags is None:
        raise ValueError(f"sentence {sentence.id!r} has no tags to cut a window from")
    if context < 0:
        raise ValueError(f"context must be >= 0, got {context}")
    spans = entity_spans(sentence.tags)
    if not 0 <= index < len(spans):
        raise ValueError(f"sentence {sentence.id!r} has {len(spans)} entities, no entity {index}")
    _, start, end = spans[index]
    lo, hi = max(0, start - context), min(len(sentence.tokens), end + context)
    for _, s, e in spans:  # ordered and disjoint: one pass widens enough
        if s < lo < e:
            lo = s
        if s < hi < e:
            hi = e
    return replace(
        sentence,
        id=f"{sentence.id}[{lo}:{hi}]",
        tokens=sentence.tokens[lo:hi],
        tags=sentence.tags[lo:hi],
        line=None if sentence.line is None else sentence.line + lo,
    )


class ContextCropper(_EpochCopies):
    """Per-epoch context crops of a share of the training sentences.

    Each crop is one of its sentence's entities, drawn at random, with ``k`` words on each side,
    ``k`` drawn from ``0..max_context`` (:func:`entity_window`).

    Args:
        sentences: The labelled training sentences.
        share: Share of the sentences with entities cropped per epoch, in [0, 1].
        seed: With the epoch, seeds the choice of sentences, entities and widths.
        max_context: The widest context kept on each side, in words.

    Raises:
        ValueError: ``share`` is outside [0, 1] or ``max_context`` is negative.
    """

    key, seed_prefix, id_suffix = "context_crop", "context-crop", "+cc"

    def __init__(
        self, sentences: Sequence[Sentence], share: float, seed: int, max_context: int = 3
    ) -> None:
        if max_context < 0:
            raise ValueError(f"train.augment.crop_max_context: {max_context} is negative")
        super().__init__(sentences, share, seed)
        self.max_context = max_context

    def _copy(self, index: int, rng: random.Random) -> Sentence:
        entity = rng.randrange(len(self.spans[index]))
        return entity_window(self.sentences[index], entity, rng.randint(0, self.max_context))


class Augmentations:
    """Several augmenters' copies of each epoch, one after another."""

    def __init__(self, parts: Sequence[_EpochCopies]) -> None:
        self.parts = list(parts)

    @property
    def copies_per_epoch(self) -> int:
        return sum(p.copies_per_epoch for p in self.parts)

    def copies(self, epoch: int) -> list[Sentence]:
        return [c for p in self.parts for c in p.copies(epoch)]


def build(sentences: Sequence[Sentence], cfg: AugmentConfig, seed: int) -> Augmentations | None:
    """The augmenters that ``cfg`` switches on for these training sentences, or None."""
    parts: list[_EpochCopies] = []
    if cfg.mention_replace > 0:
        parts.append(MentionReplacer(sentences, cfg.mention_replace, seed))
    if cfg.context_crop > 0:
        parts.append(ContextCropper(sentences, cfg.context_crop, seed, cfg.crop_max_context))
    return Augmentations(parts) if parts else None
