"""Tests of strict entity scores, slice scores, confusion counts, the confusion plot and the
report tables."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from complex_ner.domain.metrics import (
    ENTITY_LENGTH_EDGES,
    SENTENCE_LENGTH_EDGES,
    bucket_labels,
    bucket_of,
    confusion_counts,
    entity_scores,
    paper_table,
    plot_confusion,
    slice_scores,
    slices_markdown,
    write_report,
)

TYPES = ["PER", "LOC", "GRP", "CORP", "PROD", "CW"]


def random_tags(rng: random.Random, n: int, types: list[str]) -> list[str]:
    """Random tags, stray ``I-X`` included, so strict decoding is exercised too."""
    return [
        rng.choice(["O", "O", "O", f"B-{rng.choice(types)}", f"I-{rng.choice(types)}"])
        for _ in range(n)
    ]


def random_corpus(seed: int, types: list[str]) -> tuple[list[list[str]], list[list[str]]]:
    rng = random.Random(seed)
    lengths = [rng.randint(1, 15) for _ in range(40)]
    return [random_tags(rng, n, types) for n in lengths], [
        random_tags(rng, n, types) for n in lengths
    ]


@pytest.mark.parametrize("seed", range(5))
def test_scores_match_seqeval_report(seed: int) -> None:
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2

    # Only some of the types are used, so absent types and the macro rule are exercised.
    gold, pred = random_corpus(seed, TYPES[:4])
    ours = entity_scores(gold, pred, TYPES)
    ref = classification_report(
        gold, pred, mode="strict", scheme=IOB2, output_dict=True, zero_division=0
    )
    for key, name in (("micro", "micro avg"), ("macro", "macro avg")):
        for metric, ref_metric in (
            ("precision", "precision"),
            ("recall", "recall"),
            ("f1", "f1-score"),
        ):
            assert ours[key][metric] == pytest.approx(float(ref[name][ref_metric]))
    assert ours["micro"]["support"] == int(ref["micro avg"]["support"])
    for t in TYPES[:4]:
        assert ours["per_type"][t]["f1"] == pytest.approx(float(ref[t]["f1-score"]))
        assert ours["per_type"][t]["support"] == int(ref[t]["support"])
    for t in TYPES[4:]:
        assert ours["per_type"][t] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_strict_mode_ignores_stray_inside_tags() -> None:
    # seqeval strict IOB2: an entity must start with B-X, so I-PER I-PER is no entity at all.
    stray_gold = entity_scores([["I-PER", "I-PER", "O"]], [["B-PER", "I-PER", "O"]], ["PER"])
    assert stray_gold["per_type"]["PER"] == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 0,
    }
    stray_pred = entity_scores([["B-PER", "I-PER", "O"]], [["I-PER", "I-PER", "O"]], ["PER"])
    assert stray_pred["per_type"]["PER"] == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 1,
    }


def test_hand_made_scores() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-PER", "O"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["B-PER", "B-PER"]]
    s = entity_scores(gold, pred, ["PER", "LOC", "CW"])
    # PER: 2 of 3 predictions right, both gold found. LOC: missed. CW: absent everywhere.
    assert s["per_type"]["PER"] == pytest.approx(
        {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2}
    )
    assert s["per_type"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert s["micro"] == pytest.approx(
        {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3}
    )
    # Macro over PER and LOC only: CW has neither gold nor predictions.
    assert s["macro"] == pytest.approx({"precision": 1 / 3, "recall": 0.5, "f1": 0.4, "support": 3})
    assert all(isinstance(v, float) for v in (s["micro"]["f1"], s["macro"]["precision"]))
    json.dumps(s)  # plain Python numbers, no numpy scalars


def test_empty_corpus_macro_is_zero() -> None:
    s = entity_scores([["O", "O"]], [["O", "O"]], ["PER"])
    assert s["macro"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_length_mismatch_names_sentence() -> None:
    with pytest.raises(ValueError, match="sentence 1"):
        entity_scores([["O"], ["O", "O"]], [["O"], ["O"]], ["PER"])
    with pytest.raises(ValueError, match="sentence 0"):
        confusion_counts([["O"]], [["O", "O"]], ["PER"])
    with pytest.raises(ValueError, match="sentences"):
        entity_scores([["O"]], [], ["PER"])


def confusion_example() -> tuple[list[list[str]], list[list[str]]]:
    gold = [["B-PER", "I-PER", "O", "B-LOC", "O", "B-CORP", "I-CORP", "O", "B-GRP", "O", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-GRP", "O", "B-CORP", "O", "O", "O", "O", "B-LOC"]]
    return gold, pred


def test_confusion_counts_cases() -> None:
    gold, pred = confusion_example()
    types = ["PER", "LOC", "GRP", "CORP"]
    c = confusion_counts(gold, pred, types)
    assert list(c) == [*types, "(none)"]
    assert list(c["PER"]) == [*types, "boundary", "missed"]
    nonzero = {(r, k): v for r, cols in c.items() for k, v in cols.items() if v}
    assert nonzero == {
        ("PER", "PER"): 1,  # diagonal
        ("LOC", "GRP"): 1,  # exact span, wrong type
        ("CORP", "boundary"): 1,  # overlapping prediction with a shorter span
        ("GRP", "missed"): 1,  # nothing predicted there
        ("(none)", "LOC"): 1,  # spurious prediction
    }


@pytest.mark.parametrize("seed", range(3))
def test_confusion_agrees_with_scores(seed: int) -> None:
    gold, pred = random_corpus(seed, TYPES[:4])
    c = confusion_counts(gold, pred, TYPES)
    s = entity_scores(gold, pred, TYPES)
    for t in TYPES:
        row = s["per_type"][t]
        assert sum(c[t].values()) == row["support"]
        assert c[t][t] == round(row["recall"] * row["support"])


def test_confusion_keeps_unlisted_types() -> None:
    c = confusion_counts([["B-PER", "O"]], [["B-XYZ", "O"]], ["PER"])
    assert c["PER"]["XYZ"] == 1
    assert list(c) == ["PER", "XYZ", "(none)"]


def test_plot_confusion_writes_png(tmp_path: Path) -> None:
    gold, pred = confusion_example()
    out = tmp_path / "plots" / "confusion.png"
    plot_confusion(confusion_counts(gold, pred, TYPES), out, "test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["confusion.png"]  # no temp file left


def test_paper_table_layout() -> None:
    gold, pred = confusion_example()
    scores = entity_scores(gold, pred, TYPES)
    archs = ["bert_crf", "bert_bilstm_crf", "bert_linear"]
    table = paper_table({a: scores for a in archs}, TYPES)
    lines = table.strip().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["type", *(f"{a} {m}" for a in archs for m in ("P", "R", "F1"))]
    body = [line.strip("|").split("|") for line in lines[2:]]
    assert [r[0].strip() for r in body] == [*TYPES, "micro", "macro"]
    assert all(len(r) == 1 + 3 * len(archs) for r in body)
    per = body[0]
    assert [c.strip() for c in per[1:4]] == ["1.0000", "1.0000", "1.0000"]
    assert body[-1][3].strip() == f"{scores['macro']['f1']:.4f}"


def test_write_report(tmp_path: Path) -> None:
    gold, pred = confusion_example()
    scores = entity_scores(gold, pred, TYPES)
    pj, pm = tmp_path / "out" / "scores.json", tmp_path / "out" / "scores.md"
    write_report(scores, pj, pm, "BERT+CRF, es")
    assert json.loads(pj.read_text(encoding="utf-8")) == scores
    md = pm.read_text(encoding="utf-8").splitlines()
    assert md[0] == "# BERT+CRF, es"
    assert md[2] == "| type | P | R | F1 | support |"
    assert [line.split("|")[1].strip() for line in md[4:]] == [*TYPES, "micro", "macro"]


# --------------------------------------------------------------------------- slices


def test_bucket_labels_and_lookup() -> None:
    assert bucket_labels(SENTENCE_LENGTH_EDGES) == ("1-5", "6-10", "11-20", "21+")
    assert bucket_labels(ENTITY_LENGTH_EDGES) == ("1", "2", "3", "4+")
    cases = {1: "1-5", 5: "1-5", 6: "6-10", 10: "6-10", 11: "11-20", 20: "11-20", 21: "21+"}
    assert {n: bucket_of(n, SENTENCE_LENGTH_EDGES) for n in cases} == cases
    assert [bucket_of(n, ENTITY_LENGTH_EDGES) for n in (1, 2, 3, 4, 9)] == [
        "1",
        "2",
        "3",
        "4+",
        "4+",
    ]


def words(text: str) -> list[str]:
    return text.split()


def slice_example() -> tuple[list[list[str]], list[list[str]], list[list[str]], list[str]]:
    """Three Spanish sentences: a short question, a mid-length and a long statement."""
    tokens = [
        words("quién es shakira"),
        words("el museo del prado está en madrid"),
        words("cien años de soledad es una novela de gabriel garcía márquez ."),
    ]
    gold = [
        ["O", "O", "B-PER"],
        ["O", "B-LOC", "I-LOC", "I-LOC", "O", "O", "B-LOC"],
        ["B-CW", "I-CW", "I-CW", "I-CW", "O", "O", "O", "O", "B-PER", "O", "O", "O"],
    ]
    pred = [
        ["O", "O", "B-PER"],  # right
        ["O", "B-LOC", "I-LOC", "O", "O", "O", "B-LOC"],  # museo del (wrong span), madrid right
        ["B-CW", "I-CW", "I-CW", "I-CW", "O", "O", "B-PROD", "O", "O", "O", "O", "O"],
    ]
    return gold, pred, tokens, ["train", "train", "domain_adapt"]


def test_slice_scores_by_hand() -> None:
    gold, pred, tokens, domains = slice_example()
    out = slice_scores(gold, pred, tokens, domains, "es", TYPES)

    def short(row: dict) -> tuple:
        return tuple(
            round(row[k], 4) if isinstance(row[k], float) else row[k]
            for k in ("sentences", "entities", "predicted", "micro_f1", "macro_f1")
        )

    # train: PER 1/1 right, LOC 1 of 2 -> micro 2/3, macro (1 + 1/2) / 2.
    # domain_adapt: CW right, PER missed, PROD spurious -> micro 1/2, macro (1 + 0 + 0) / 3.
    assert {g: short(r) for g, r in out["domain"].items()} == {
        "domain_adapt": (1, 2, 2, 0.5, 0.3333),
        "train": (2, 3, 3, 0.6667, 0.75),
    }
    assert {g: short(r) for g, r in out["sentence_length"].items()} == {
        "1-5": (1, 1, 1, 1.0, 1.0),
        "6-10": (1, 2, 2, 0.5, 0.5),
        "11-20": (1, 2, 2, 0.5, 0.3333),
        "21+": (0, 0, 0, 0.0, 0.0),
    }
    # statements: LOC 1/2, CW 1/1, PER 0/1, PROD 0/1 spurious -> macro (0.5 + 1 + 0 + 0) / 4.
    assert {g: short(r) for g, r in out["sentence_type"].items()} == {
        "question": (1, 1, 1, 1.0, 1.0),
        "statement": (2, 4, 4, 0.5, 0.375),
    }
    # Length 1: shakira, madrid right, gabriel missed, novela spurious; PER F1 2/3, LOC 1,
    # PROD 0 -> macro 5/9. Length 2: "museo del" predicted only; 3: "museo del prado" missed.
    assert {g: short(r) for g, r in out["entity_length"].items()} == {
        "1": (3, 3, 3, 0.6667, 0.5556),
        "2": (0, 0, 1, 0.0, 0.0),
        "3": (1, 1, 0, 0.0, 0.0),
        "4+": (1, 1, 1, 1.0, 1.0),
    }
    assert out["entity_length"]["1"]["precision"] == pytest.approx(2 / 3)
    assert out["entity_length"]["1"]["recall"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("seed", range(3))
def test_a_slice_holding_every_sentence_scores_like_entity_scores(seed: int) -> None:
    gold, pred = random_corpus(seed, TYPES[:3])
    tokens = [["w"] * len(g) for g in gold]
    out = slice_scores(gold, pred, tokens, [None] * len(gold), "es", TYPES)
    (row,) = out["domain"].values()
    scores = entity_scores(gold, pred, TYPES)
    assert row["sentences"] == len(gold) and row["entities"] == scores["micro"]["support"]
    assert row["micro_f1"] == pytest.approx(scores["micro"]["f1"])
    assert row["macro_f1"] == pytest.approx(scores["macro"]["f1"])
    assert list(out["domain"]) == ["(none)"]
    # Every sentence lands in one length bucket and one sentence type.
    for kind in ("sentence_length", "sentence_type"):
        assert sum(r["sentences"] for r in out[kind].values()) == len(gold)


def test_slice_scores_reject_misaligned_input() -> None:
    gold, pred, tokens, domains = slice_example()
    with pytest.raises(ValueError, match="2 domains"):
        slice_scores(gold, pred, tokens, domains[:2], "es", TYPES)


def test_slices_markdown() -> None:
    gold, pred, tokens, domains = slice_example()
    md = slices_markdown(slice_scores(gold, pred, tokens, domains, "es", TYPES), "es on heldout")
    lines = md.splitlines()
    assert lines[0] == "# es on heldout"
    rows = [line.split("|")[1:3] for line in lines if line.startswith("| ") and "---" not in line]
    assert [(a.strip(), b.strip()) for a, b in rows][1:4] == [
        ("domain", "domain_adapt"),
        ("domain", "train"),
        ("sentence_length", "1-5"),
    ]
    assert "| sentence_type | question | 1 | 1 | 1 | 1.0000 | 1.0000 | 1.0000 | 1.0000 |" in lines
