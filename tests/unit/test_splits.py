"""The three disjoint splits: seeded hold-outs by sentence text, the official dev file as the
held-out split, the split params' checks, and what stats and the gate make of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from complex_ner.core.config import ConfigError, Params, load_params
from complex_ner.core.io import sha256_file
from complex_ner.core.paths import (
    HELDOUT_SPLIT,
    REPORTED_SPLIT,
    TEST_SPLIT,
    TRAIN_SPLIT,
    VAL_SPLIT,
    split_file,
    validation_results,
)
from complex_ner.domain.data import (
    Sentence,
    format_conll,
    hold_out,
    load_splits,
    read_conll,
    write_splits,
)
from complex_ner.domain.stats import compute_stats
from complex_ner.domain.validation import ValidationFailed, build_tables, require_validated

FRACTIONS = {VAL_SPLIT: 0.1, HELDOUT_SPLIT: 0.1}


def sentence(i: int, text: str | None = None) -> Sentence:
    words = (text or f"frase número {i}").split()
    return Sentence(id=f"id-{i}", tokens=tuple(words), tags=("O",) * len(words))


def ids(sentences: list[Sentence]) -> set[str]:
    return {s.id for s in sentences}


def texts(sentences: list[Sentence]) -> set[tuple[str, ...]]:
    return {s.tokens for s in sentences}


def test_reported_split_is_the_heldout_split() -> None:
    assert REPORTED_SPLIT == HELDOUT_SPLIT == "heldout"


def test_hold_outs_are_disjoint_exactly_sized_and_independent_of_order() -> None:
    sents = [sentence(i) for i in range(1000)]
    out = hold_out(sents, FRACTIONS, seed=13)
    assert {k: len(v) for k, v in out.items()} == {"train": 800, "val": 100, "heldout": 100}
    parts = [ids(out[k]) for k in (TRAIN_SPLIT, VAL_SPLIT, HELDOUT_SPLIT)]
    assert set.union(*parts) == ids(sents) and sum(map(len, parts)) == len(sents)
    # Each split keeps the file order.
    assert [s.id for s in out[VAL_SPLIT]] == [s.id for s in sents if s.id in parts[1]]
    again = hold_out(list(reversed(sents)), FRACTIONS, seed=13)
    assert all(ids(again[k]) == ids(out[k]) for k in out)
    assert ids(hold_out(sents, FRACTIONS, seed=14)[HELDOUT_SPLIT]) != parts[2]


def test_the_draw_follows_the_text_not_the_id() -> None:
    sents = [sentence(i) for i in range(200)]
    renamed = [Sentence(id=f"other-{s.id}", tokens=s.tokens, tags=s.tags) for s in sents]
    a, b = hold_out(sents, FRACTIONS, 13), hold_out(renamed, FRACTIONS, 13)
    assert all(texts(a[k]) == texts(b[k]) for k in a)


def test_identical_sentences_never_sit_on_both_sides() -> None:
    singles = [sentence(i) for i in range(200)]
    repeated = [
        sentence(1000 + 5 * t + c, f"plantilla {t} repetida") for t in range(20) for c in range(5)
    ]
    sents = singles + repeated
    out = hold_out(sents, FRACTIONS, seed=13)
    seen = [texts(out[k]) for k in out]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    # Single sentences fill the remainder, so the sizes stay exact.
    assert len(out[VAL_SPLIT]) == len(out[HELDOUT_SPLIT]) == 30
    assert any(s.tokens[0] == "plantilla" for k in (VAL_SPLIT, HELDOUT_SPLIT) for s in out[k])


def test_small_and_repetitive_inputs() -> None:
    # Too few distinct texts to leave train one: nothing is held out.
    one = hold_out([sentence(0)], FRACTIONS, 13)
    assert len(one[TRAIN_SPLIT]) == 1 and not one[VAL_SPLIT] and not one[HELDOUT_SPLIT]
    same = hold_out([sentence(i, "la misma frase") for i in range(10)], FRACTIONS, 13)
    assert len(same[TRAIN_SPLIT]) == 10
    three = hold_out([sentence(i) for i in range(3)], FRACTIONS, 13)
    assert [len(three[k]) for k in (TRAIN_SPLIT, VAL_SPLIT, HELDOUT_SPLIT)] == [1, 1, 1]
    # Every text ten times: no group fits a target of 4, each hold-out still gets one group.
    groups = [sentence(10 * t + c, f"texto {t}") for t in range(4) for c in range(10)]
    out = hold_out(groups, FRACTIONS, 13)
    assert [len(out[k]) for k in (TRAIN_SPLIT, VAL_SPLIT, HELDOUT_SPLIT)] == [20, 10, 10]
    assert all(len(texts(out[k])) == (2 if k == TRAIN_SPLIT else 1) for k in out)


def test_bad_fractions_are_refused() -> None:
    with pytest.raises(ValueError, match=r"val_fraction must be in \(0, 1\)"):
        hold_out([sentence(i) for i in range(5)], {VAL_SPLIT: 0.0}, 1)
    with pytest.raises(ValueError, match=r"val_fraction \+ heldout_fraction must be < 1"):
        hold_out([sentence(i) for i in range(5)], {VAL_SPLIT: 0.5, HELDOUT_SPLIT: 0.5}, 1)


def test_config_refuses_fractions_that_leave_no_training_data(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("split: {val_fraction: 0.6, heldout_fraction: 0.4}", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_params(path)
    message = str(info.value)
    assert message.startswith(f"{path}: split.heldout_fraction: ")
    assert "split.val_fraction + split.heldout_fraction must be < 1" in message
    path.write_text("split: {val_fraction: 0.6, heldout_fraction: 0.3}", encoding="utf-8")
    assert load_params(path).split.heldout_fraction == 0.3


# --------------------------------------------------------------------------- on files


def project(tmp_path: Path, files: dict[str, list[Sentence]]) -> Params:
    """A project whose ingested es files (``data/raw/es/<name>.conll``) hold ``files``."""
    for name, sents in files.items():
        path = tmp_path / "data" / "raw" / "es" / f"{name}.conll"
        path.parent.mkdir(parents=True, exist_ok=True)
        text = format_conll(sents)
        if name == "test":
            text = text.replace(" _ _ O\n", " _ _ _\n")  # unlabelled, as the official test file
        path.write_text(text, encoding="utf-8")
    params = tmp_path / "params.yaml"
    params.write_text("data: {languages: [es]}\n", encoding="utf-8")
    return load_params(params)


def test_without_a_dev_file_all_three_splits_come_from_train(tmp_path: Path) -> None:
    train = [sentence(i) for i in range(50)]
    params = project(tmp_path, {"train": train, "test": [sentence(900)]})
    splits = load_splits(params, "es")
    assert list(splits) == [TRAIN_SPLIT, VAL_SPLIT, HELDOUT_SPLIT, TEST_SPLIT]
    assert [len(splits[k]) for k in (TRAIN_SPLIT, VAL_SPLIT, HELDOUT_SPLIT)] == [40, 5, 5]
    assert ids(splits[TRAIN_SPLIT]) | ids(splits[VAL_SPLIT]) | ids(splits[HELDOUT_SPLIT]) == ids(
        train
    )
    assert splits[TEST_SPLIT][0].tags is None
    counts = write_splits(params)
    assert counts == {"es": {"train": 40, "val": 5, "heldout": 5, "test": 1}}
    written = read_conll(split_file(params, "es", HELDOUT_SPLIT))
    assert [s.id for s in written] == [s.id for s in splits[HELDOUT_SPLIT]]


def test_an_official_dev_file_is_the_heldout_split(tmp_path: Path) -> None:
    train = [sentence(i) for i in range(50)]
    dev = [sentence(100 + i) for i in range(7)]
    params = project(tmp_path, {"train": train, "dev": dev})
    splits = load_splits(params, "es")
    assert splits[HELDOUT_SPLIT] == dev  # as published, in file order
    assert len(splits[VAL_SPLIT]) == 5  # val: still a seeded hold-out of train
    assert ids(splits[TRAIN_SPLIT]) | ids(splits[VAL_SPLIT]) == ids(train)
    assert not ids(splits[TRAIN_SPLIT]) & ids(splits[VAL_SPLIT])
    assert TEST_SPLIT not in splits


def test_stats_count_every_split_and_the_dev_overlap_with_train(tmp_path: Path) -> None:
    train = [sentence(i) for i in range(50)]
    # With a dev file, train and val are drawn from the train file alone: pick a train text.
    in_train = hold_out(train, {VAL_SPLIT: 0.1}, seed=13)[TRAIN_SPLIT][0]
    dev = [sentence(100, " ".join(in_train.tokens)), sentence(101)]
    params = project(tmp_path, {"train": train, "dev": dev})
    stats, lengths = compute_stats(params)
    assert {k: v["sentences"] for k, v in stats["es"].items()} == {
        "train": 45,
        "val": 5,
        "heldout": 2,
    }
    assert stats["es"][HELDOUT_SPLIT]["in_train"] == 1
    assert stats["es"][VAL_SPLIT]["in_train"] == 0
    assert "in_train" not in stats["es"][TRAIN_SPLIT]
    assert set(lengths["es"]) == {"train", "val", "heldout"}


def test_the_gate_verdict_holds_for_the_heldout_fraction_too(tmp_path: Path) -> None:
    params = project(tmp_path, {"train": [sentence(i) for i in range(10)]})
    raw = tmp_path / "data" / "raw" / "es" / "train.conll"
    report = {
        "success": True,
        "files": {"es/train": sha256_file(raw)},
        "split": {"val_fraction": 0.1, "heldout_fraction": 0.1, "seed": 13},
    }
    path = validation_results(params)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(report), encoding="utf-8")
    require_validated(params)
    other = params.model_copy(
        update={"split": params.split.model_copy(update={"heldout_fraction": 0.2})}
    )
    with pytest.raises(ValidationFailed, match="validated with split"):
        require_validated(other)


def test_the_gate_counts_entities_of_the_whole_train_file() -> None:
    def labelled(i: int, tag: str, source: str) -> Sentence:
        return Sentence(id=f"e{i}", tokens=("x",), tags=(f"B-{tag}",), source=source, line=1)

    splits = {
        TRAIN_SPLIT: [labelled(0, "PER", "train.conll")],
        VAL_SPLIT: [labelled(1, "LOC", "train.conll")],
        HELDOUT_SPLIT: [labelled(2, "CW", "dev.conll")],  # an official dev file: not train
    }
    tables = build_tables(splits, "es")
    assert sorted(tables["train_entities"]["entity_type"]) == ["LOC", "PER"]
