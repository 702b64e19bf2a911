"""Smoke tests of the benchmark scripts: each ``main`` runs with ``--quick`` on tiny shapes and a
tiny random BERT, and returns (and prints) its markdown table."""

from __future__ import annotations

import itertools
import json
from fractions import Fraction
from pathlib import Path

import pytest
from benchmarks import (
    bench_coldstart,
    bench_crf,
    bench_inference,
    bench_roofline,
    bench_training,
    bench_trim,
    run_all,
)

from complex_ner.domain.encoders import minilm_dir, tiny_random_bert


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_random_bert(minilm_dir(), tmp_path_factory.mktemp("bench") / "bert", hidden=32)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def check_result(result: dict, columns: list[str], out: str, json_path: Path) -> None:
    header = "| " + " | ".join(columns) + " |"
    assert result["columns"] == columns
    assert result["table"].splitlines()[0] == header
    assert len(result["table"].splitlines()) == 2 + len(result["rows"])
    assert header in out  # printed
    assert json.loads(json_path.read_text())["table"] == result["table"]
    assert result["summary"] and all("metric" in row for row in result["summary"])


def test_crf_quick_has_zero_mismatches(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    result = bench_crf.main(["--quick", "--json", str(tmp_path / "crf.json")])
    check_result(result, bench_crf.COLUMNS, capsys.readouterr().out, tmp_path / "crf.json")
    assert result["total_mismatches"] == 0
    assert result["sketch_mismatches"] == 0
    assert all(row[-1] == 0 for row in result["rows"])
    assert result["equivalence"]["inputs"] == 100
    assert all(c["ours_ms"] > 0 and c["torchcrf_ms"] > 0 for c in result["cells"])


def test_inference_quick(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "inference.json"
    result = bench_inference.main(["--quick", "--encoder", str(tiny), "--json", str(path)])
    check_result(result, bench_inference.COLUMNS, capsys.readouterr().out, path)
    assert result["same_weights"] is True
    full = [r for r in result["records"] if r.get("phase") == "full"]
    assert [r["system"] for r in full] == [
        "ours (one linear head)",
        "HF pipeline, aggregation=first",
        "ours, dynamic int8 (nn.Linear)",
    ]
    assert all(r["rate"] > 0 and 0 <= r["word_agreement_vs_pipeline"] <= 1 for r in full)
    assert full[0]["word_agreement_vs_fp32"] == 1.0


def test_groups_to_tags() -> None:
    words = ["la", "sega", "game", "gear", "y", "ana", "luis"]
    groups = [
        {"entity_group": "CW", "start": 3, "end": 17},  # "sega game gear"
        {"entity_group": "PER", "start": 20, "end": 23},  # "ana"
        {"entity_group": "PER", "start": 24, "end": 28},  # "luis": a second entity
    ]
    assert bench_inference.groups_to_tags(groups, words) == [
        "O",
        "B-CW",
        "I-CW",
        "I-CW",
        "O",
        "B-PER",
        "B-PER",
    ]


def test_coldstart_quick(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "coldstart.json"
    result = bench_coldstart.main(["--quick", "--encoder", str(tiny), "--json", str(path)])
    check_result(result, bench_coldstart.COLUMNS, capsys.readouterr().out, path)
    assert result["failures"] == []
    assert result["forbidden_imported"] == []
    assert "torch" in result["imports"]  # the -X importtime output was parsed
    assert result["median_s"] > 0


def test_training_quick(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "training.json"
    result = bench_training.main(["--quick", "--encoder", str(tiny), "--json", str(path)])
    check_result(result, bench_training.COLUMNS, capsys.readouterr().out, path)
    configs = [(r["arch"], r["freeze_embeddings"]) for r in result["records"]]
    assert configs == [
        ("bert_crf", True),
        ("bert_bilstm_crf", True),
        ("bert_linear", True),
        ("bert_crf", False),
    ]
    for rec in result["records"]:
        assert rec["seconds_per_step"] > 0 and rec["tokens_per_second"] > 0
        bucketed = result["padding"][rec["arch"]]["bucketed"]
        assert rec["pad_share"] == pytest.approx(bucketed["pad_share"])
        assert result["padding"][rec["arch"]]["random"]["pad_share"] >= bucketed["pad_share"]
    frozen, unfrozen = result["records"][0], result["records"][3]
    assert unfrozen["trainable_params"] > frozen["trainable_params"]


def test_expected_max_matches_enumeration() -> None:
    lengths = sorted([5, 3, 9, 9, 2, 7, 4])
    for m in range(1, len(lengths) + 1):
        subsets = list(itertools.combinations(lengths, m))
        exact = Fraction(sum(max(s) for s in subsets), len(subsets))
        assert bench_training.expected_max(lengths, m) == exact
    rand = bench_training.random_batching_padding(lengths, 3)
    bucket = bench_training.bucketed_padding(lengths, 3)
    assert bucket["padded"] == 3 * 4 + 3 * 9 + 1 * 9  # [2,3,4] [5,7,9] [9]
    assert rand["pad_share"] >= bucket["pad_share"]


def test_combined_table() -> None:
    results = [
        {
            "benchmark": "crf",
            "summary": [
                run_all.target("speedup", 1.5, ">= 10x", False),
                run_all.target("mismatches", 0, "0", True),
            ],
        },
        {"benchmark": "training", "summary": [run_all.target("s/step", 2.0, None, None)]},
    ]
    table = run_all.combined_table(results)
    lines = table.splitlines()
    assert lines[0] == "| benchmark | metric | value | target | status |"
    assert "| crf | speedup | 1.50 | >= 10x | MISSED |" in lines
    assert "| crf | mismatches | 0 | 0 | met |" in lines
    assert "| training | s/step | 2.00 | — | — |" in lines


def test_trim_quick_gives_the_full_encoders_tags(tmp_path: Path) -> None:
    out = tmp_path / "trim.json"
    result = bench_trim.main(["--quick", "--json", str(out)])
    assert json.loads(out.read_text())["benchmark"] == "trim"
    assert len(result["rows"]) == 4
    trimmed = [r for r in result["records"] if r["encoder"] == "trimmed"]
    full = [r for r in result["records"] if r["encoder"] == "full"]
    assert all(r["same_val_tags"] for r in trimmed)
    assert all(t["vocab_rows"] < f["vocab_rows"] for t, f in zip(trimmed, full, strict=True))
    # Same seed, same corpus pieces: the epoch's loss does not depend on the unused rows.
    for t, f in zip(trimmed, full, strict=True):
        assert abs(t["loss"] - f["loss"]) <= 1e-4 * abs(f["loss"])


def test_flops_per_piece_of_e5_small() -> None:
    config = {"hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 12}
    # q, k, v, output (4 x 384²) and the FFN (2 x 384 x 1536), 12 layers, multiply-add = 2.
    assert bench_roofline.linear_flops_per_piece(config) == 42_467_328


def test_roofline_quick_sets_measured_rates_against_the_ceiling(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    inference = tmp_path / "inference.json"
    records = [
        {"system": bench_roofline.OURS, "phase": "full", "device": "cpu", "rate": 50.0},
        {"system": bench_roofline.PIPELINE, "phase": "full", "device": "cpu", "rate": 25.0},
        {"system": bench_roofline.OURS, "phase": "full", "device": "cuda", "rate": 9e9},
        {"system": bench_roofline.PIPELINE, "phase": "sweep", "rate": 1.0},
    ]
    inference.write_text(json.dumps({"records": records}), encoding="utf-8")
    path = tmp_path / "roofline.json"
    result = bench_roofline.main(
        ["--quick", "--json", str(path), "--inference-json", str(inference)]
    )
    check_result(result, bench_roofline.COLUMNS, capsys.readouterr().out, path)
    assert result["ours_rate"] == 50.0 and result["pipeline_rate"] == 25.0  # CPU full rows only
    assert result["peak_gflops"] > 0 and len(result["sgemm_gflops"]) == 3
    # The ceiling is the per-sentence linear work at the combined sgemm rate.
    ceiling = result["peak_gflops"] * 1e9 / result["flops_per_sentence"]
    assert result["ceiling_rate"] == pytest.approx(ceiling)
    values = dict(result["rows"])
    assert values["most any fp32 predictor can reach: ceiling / pipeline"] == round(
        ceiling / 25.0, 2
    )
    assert result["summary"][0]["met"] == (ceiling / 25.0 >= 3)
