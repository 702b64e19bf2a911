"""Training copies: mention replacement and context crops: valid BIO, seeded, off at share 0."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from benchmarks import short_context

from complex_ner.core.bio import allowed_after, entity_spans
from complex_ner.core.config import AugmentConfig, ConfigError, load_params
from complex_ner.domain.augment import (
    ContextCropper,
    MentionBank,
    MentionReplacer,
    build,
    entity_window,
    replace_mentions,
)
from complex_ner.domain.data import Sentence

Corpus = tuple[list[list[str]], list[list[str]]]


def sentences(sample: Callable[[str, int], Corpus], lang: str, n: int = 60) -> list[Sentence]:
    words, tags = sample(lang, n)
    return [
        Sentence(id=f"{lang}{i}", tokens=tuple(w), tags=tuple(t))
        for i, (w, t) in enumerate(zip(words, tags, strict=True))
    ]


def valid_bio(tags: Sequence[str]) -> bool:
    previous: str | None = None
    for tag in tags:
        if not allowed_after(previous, tag):
            return False
        previous = tag
    return True


def outside_words(s: Sentence) -> list[tuple[str, ...]]:
    """The runs of words between (and around) the entities."""
    runs, position = [], 0
    for _, start, end in entity_spans(s.tags or ()):
        runs.append(s.tokens[position:start])
        position = end
    return [*runs, s.tokens[position:]]


@pytest.mark.parametrize("lang", ["es", "zh"])
def test_copies_are_valid_bio_with_same_type_mentions_from_the_training_set(
    conll_sample: Callable[[str, int], Corpus], lang: str
) -> None:
    train = sentences(conll_sample, lang)
    replacer = MentionReplacer(train, 1.0, seed=13)
    bank = replacer.bank.mentions
    by_id = {s.id: s for s in train}
    copies = replacer.copies(1)
    assert len(copies) == len(replacer.candidates) > 0
    changed = 0
    for copy in copies:
        original = by_id[copy.id.removesuffix("+mr1")]
        assert copy.tags is not None and len(copy.tags) == len(copy.tokens)
        assert valid_bio(copy.tags)
        old, new = entity_spans(original.tags or ()), entity_spans(copy.tags)
        assert [k for k, _, _ in new] == [k for k, _, _ in old]
        assert outside_words(copy) == outside_words(original)
        for (kind, start, end), (_, o_start, o_end) in zip(new, old, strict=True):
            mention = copy.tokens[start:end]
            assert mention in bank[kind]
            if len(bank[kind]) > 1:
                assert mention != original.tokens[o_start:o_end]
        changed += copy.tokens != original.tokens
    assert changed == len(copies)


def test_a_replacement_of_another_length_rebuilds_b_then_i_tags() -> None:
    short = Sentence("a", ("ana", "vive", "en", "lima"), ("B-PER", "O", "O", "B-LOC"))
    long = Sentence("b", ("río", "de", "la", "plata"), ("B-LOC", "I-LOC", "I-LOC", "I-LOC"))
    bank = MentionBank.collect([short, long])
    copy = replace_mentions(short, bank, random.Random(0))
    assert copy.tokens == ("ana", "vive", "en", "río", "de", "la", "plata")
    assert copy.tags == ("B-PER", "O", "O", "B-LOC", "I-LOC", "I-LOC", "I-LOC")
    back = replace_mentions(long, bank, random.Random(0))
    assert back.tokens == ("lima",) and back.tags == ("B-LOC",)


def test_chinese_mentions_are_character_sequences() -> None:
    a = Sentence("a", tuple("我喜欢长江"), ("O", "O", "O", "B-LOC", "I-LOC"))
    b = Sentence("b", tuple("他去了波茲南"), ("O", "O", "O", "B-LOC", "I-LOC", "I-LOC"))
    bank = MentionBank.collect([a, b])
    assert bank.mentions["LOC"] == (("长", "江"), ("波", "茲", "南"))
    copy = replace_mentions(a, bank, random.Random(1))
    assert "".join(copy.tokens) == "我喜欢波茲南"
    assert copy.tags == ("O", "O", "O", "B-LOC", "I-LOC", "I-LOC")


def test_copies_depend_on_seed_and_epoch_alone(
    conll_sample: Callable[[str, int], Corpus],
) -> None:
    train = sentences(conll_sample, "es")
    a, b = MentionReplacer(train, 0.5, seed=7), MentionReplacer(train, 0.5, seed=7)
    random.seed(99)  # the global RNG plays no part
    assert a.copies(2) == b.copies(2)
    assert len(a.copies(2)) == round(0.5 * len(a.candidates))
    assert a.copies(1) != a.copies(2)  # redrawn every epoch
    assert MentionReplacer(train, 0.5, seed=8).copies(2) != a.copies(2)


def test_share_zero_adds_nothing_and_sentences_without_entities_are_never_copied() -> None:
    plain = Sentence("p", ("nada", "aquí"), ("O", "O"))
    named = Sentence("n", ("ana",), ("B-PER",))
    assert MentionReplacer([plain, named], 0.0, seed=1).copies(1) == []
    copies = MentionReplacer([plain, named], 1.0, seed=1).copies(1)
    # The only PER mention is its own: the copy keeps it.
    assert [(c.id, c.tokens, c.tags) for c in copies] == [("n+mr1", ("ana",), ("B-PER",))]


def test_bad_share_and_untagged_sentences_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="train.augment.mention_replace"):
        MentionReplacer([], 1.5, seed=1)
    with pytest.raises(ValueError, match="no tags"):
        replace_mentions(Sentence("u", ("x",), None), MentionBank({}), random.Random(0))
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  augment:\n    mention_replace: 1.5\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="train.augment.mention_replace"):
        load_params(params)


# --------------------------------------------------------------------------- context crops

#: Two entities two words apart: "el museo del prado está junto a la puerta de alcalá ."
MUSEO = Sentence(
    "m",
    ("el", "museo", "del", "prado", "está", "junto", "a", "la", "puerta", "de", "alcalá", "."),
    ("O", "B-LOC", "I-LOC", "I-LOC", "O", "O", "O", "O", "B-LOC", "I-LOC", "I-LOC", "O"),
)


@pytest.mark.parametrize(
    ("index", "context", "words"),
    [
        (0, 0, "museo del prado"),
        (0, 1, "el museo del prado está"),
        (1, 0, "puerta de alcalá"),
        (1, 2, "a la puerta de alcalá ."),
        (0, 4, "el museo del prado está junto a la"),
        # Five words right of the first entity reach into the second: widened to all of it.
        (0, 5, "el museo del prado está junto a la puerta de alcalá"),
        (1, 5, "museo del prado está junto a la puerta de alcalá ."),
    ],
)
def test_entity_windows_keep_the_entity_and_never_cut_another(
    index: int, context: int, words: str
) -> None:
    window = entity_window(MUSEO, index, context)
    assert " ".join(window.tokens) == words
    assert valid_bio(window.tags or ())
    # Every entity of the window is a whole entity of the sentence.
    start = int(window.id.split("[")[1].split(":")[0])
    whole = {(k, s - start, e - start) for k, s, e in entity_spans(MUSEO.tags or ())}
    assert set(entity_spans(window.tags or ())) <= whole
    assert window.tags == MUSEO.tags[start : start + len(window.tokens)]


def test_entity_window_refuses_bad_requests() -> None:
    with pytest.raises(ValueError, match="has 2 entities, no entity 2"):
        entity_window(MUSEO, 2, 1)
    with pytest.raises(ValueError, match="context must be >= 0"):
        entity_window(MUSEO, 0, -1)
    with pytest.raises(ValueError, match="no tags"):
        entity_window(Sentence("u", ("x",), None), 0, 0)


@pytest.mark.parametrize("lang", ["es", "zh"])
def test_crops_are_short_valid_seeded_windows_of_sentences_with_entities(
    conll_sample: Callable[[str, int], Corpus], lang: str
) -> None:
    train = sentences(conll_sample, lang)
    cropper = ContextCropper(train, 0.5, seed=7, max_context=2)
    crops = cropper.copies(1)
    assert len(crops) == cropper.copies_per_epoch == round(0.5 * len(cropper.candidates)) > 0
    by_id = {s.id: s for s in train}
    for crop in crops:
        assert crop.id.endswith("+cc1") and entity_spans(crop.tags or ())
        source = by_id[crop.id.split("[")[0]]
        start = int(crop.id.split("[")[1].split(":")[0])
        assert crop.tokens == source.tokens[start : start + len(crop.tokens)]
        assert crop.tags == (source.tags or ())[start : start + len(crop.tokens)]
        assert valid_bio(crop.tags or ())
        # At most max_context words outside the entities on either side.
        spans = entity_spans(crop.tags or ())
        assert spans[0][1] <= 2 and len(crop.tokens) - spans[-1][2] <= 2
    assert ContextCropper(train, 0.5, seed=7, max_context=2).copies(1) == crops
    assert cropper.copies(2) != crops


def test_build_combines_the_switched_on_augmenters(
    conll_sample: Callable[[str, int], Corpus],
) -> None:
    train = sentences(conll_sample, "es")
    assert build(train, AugmentConfig(), seed=1) is None
    both = build(train, AugmentConfig(mention_replace=0.5, context_crop=0.25), seed=1)
    assert both is not None
    replaced = MentionReplacer(train, 0.5, seed=1).copies(3)
    cropped = ContextCropper(train, 0.25, seed=1).copies(3)
    assert both.copies(3) == replaced + cropped
    assert both.copies_per_epoch == len(replaced) + len(cropped)


def test_bad_crop_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="train.augment.context_crop"):
        ContextCropper([], 1.5, seed=1)
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  augment:\n    crop_max_context: -1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="train.augment.crop_max_context"):
        load_params(params)


def test_the_short_context_benchmark_scores_one_window_per_entity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], one_thread: None
) -> None:
    path = tmp_path / "short_context.json"
    record = short_context.main(["--quick", "--threads", "1", "--json", str(path)])
    assert json.loads(path.read_text(encoding="utf-8"))["table"] == record["table"]
    assert record["table"] in capsys.readouterr().out
    columns = record["columns"]
    counts = {
        row[columns.index("input")]: row[columns.index("sentences")] for row in record["rows"]
    }
    # --quick: 12 synthetic sentences of three entities each.
    assert counts == {
        **{f"entity +/- {k} tokens": 36 for k in (0, 1, 2, 4)},
        "whole sentence": 12,
    }
    words = [row[columns.index("mean words")] for row in record["rows"]]
    assert words == sorted(words)  # more context, longer inputs
    whole = record["scores"]["random"]["whole sentence"]["macro"]["f1"]
    assert round(whole, 4) == record["rows"][-1][columns.index("macro-F1")]
