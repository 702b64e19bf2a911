"""Smoke tests of the benchmark scripts: each ``main`` runs its smallest configuration (``--quick``:
tiny shapes, synthetic sentences, the tiny random BERT) in this process and returns, prints and
writes its result. The scripts that start processes are tested in
``tests/integration/test_benchmarks_processes.py`` and ``test_bench_overhead.py``."""

from __future__ import annotations

import json
import logging
from fractions import Fraction
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
import torch
from benchmarks import (
    bench_crf,
    bench_inference,
    bench_onnx,
    bench_optimizer,
    bench_overhead,
    bench_quality,
    bench_roofline,
    bench_training,
    bench_trim,
    gpu_smoke,
    harness,
    run_all,
)
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertConfig, BertModel

from complex_ner.core.config import ConfigError, load_params

pytestmark = pytest.mark.usefixtures("one_thread")


def run_quick(module: Any, tmp_path: Path, *extra: str) -> tuple[dict[str, Any], dict]:
    """``module.main`` with ``--quick`` and a JSON path; the result and the written JSON."""
    path = tmp_path / "result.json"
    record = module.main(["--quick", "--json", str(path), *extra])
    return record, json.loads(path.read_text(encoding="utf-8"))


def check_printed_table(record: dict[str, Any], written: dict, out: str) -> None:
    """The table has the columns and one line per row, was printed and written."""
    lines = record["table"].splitlines()
    assert lines[0] == "| " + " | ".join(record["columns"]) + " |"
    assert len(lines) == 2 + len(record["rows"])
    assert record["table"] in out
    assert written["table"] == record["table"]
    assert written["command"].startswith("python -m benchmarks.")


# --------------------------------------------------------------------------- harness


def test_time_calls_warms_up_then_times_and_checks_every_timed_call() -> None:
    calls: list[int] = []
    seen: list[int] = []

    def fn() -> int:
        calls.append(len(calls))
        return len(calls)

    timing = harness.time_calls(fn, 4, warmup=2, check=seen.append)
    assert len(calls) == 6 and seen == [3, 4, 5, 6]
    assert timing.n == 4 and timing.best <= timing.median
    q1, q3 = timing.quartiles
    assert q1 <= timing.median <= q3 and timing.iqr == q3 - q1


def test_time_calls_stops_at_the_budget_but_not_before_the_minimum() -> None:
    timing = harness.time_calls(lambda: None, 1000, warmup=0, budget_s=0.0, min_repeats=3)
    assert timing.n == 3


def test_md_table_refuses_a_ragged_row() -> None:
    with pytest.raises(ValueError, match="2 cells for 3 columns"):
        harness.md_table(["a", "b", "c"], [[1, 2]])


def test_run_all_prints_one_summary_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "all.json"
    combined = run_all.main(["--quick", "--only", "roofline", "--in-process", "--json", str(out)])
    printed = capsys.readouterr().out
    assert combined["failed"] == [] and [r["benchmark"] for r in combined["results"]] == [
        "roofline"
    ]
    assert combined["table"] in printed and printed.count("| benchmark | metric |") == 1
    assert json.loads(out.read_text(encoding="utf-8"))["table"] == combined["table"]


def test_combined_table_marks_met_and_missed_targets() -> None:
    results = [
        {
            "benchmark": "crf",
            "summary": [
                harness.target("speedup", 1.5, ">= 10x", False),
                harness.target("mismatches", 0, "0", True),
            ],
        },
        {"benchmark": "training", "summary": [harness.target("s/step", 2.0)]},
    ]
    lines = run_all.combined_table(results).splitlines()
    assert "| crf | speedup | 1.50 | >= 10x | MISSED |" in lines
    assert "| crf | mismatches | 0 | 0 | met |" in lines
    assert "| training | s/step | 2.00 | — | — |" in lines


# --------------------------------------------------------------------------- scripts


def test_crf_paths_match_torchcrf(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    record, written = run_quick(bench_crf, tmp_path, "--random-inputs", "20", "--devices", "cpu")
    check_printed_table(record, written, capsys.readouterr().out)
    assert record["total_mismatches"] == 0 and record["torch_loop_mismatches"] == 0
    check = record["equivalence"]
    assert check["inputs"] == 20 and check["numpy_mismatched_sequences"] == 0
    assert all(c["numpy"]["median"] > 0 and c["torchcrf"]["median"] > 0 for c in record["cells"])


def test_inference_compares_equal_weights(
    tiny_bert_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    record, written = run_quick(
        bench_inference, tmp_path, "--encoder", str(tiny_bert_dir), "--devices", "cpu"
    )
    check_printed_table(record, written, capsys.readouterr().out)
    assert record["same_weights"] is True
    full = [r for r in record["records"] if r.get("phase") == "full"]
    names = [r["system"] for r in full]
    assert names == [
        bench_inference.OURS_SYSTEM,
        bench_inference.PIPELINE_SYSTEM,
        bench_inference.INT8_SYSTEM,
        bench_inference.ONNX_SYSTEM,
        bench_inference.ONNX_INT8_SYSTEM,
    ]
    assert all(r["rate"] > 0 and 0 <= r["word_agreement_vs_pipeline"] <= 1 for r in full)
    assert full[0]["word_agreement_vs_fp32"] == 1.0


def test_onnx_compares_torch_fp32_and_int8(
    tiny_bert_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    record, written = run_quick(bench_onnx, tmp_path, "--encoder", str(tiny_bert_dir))
    check_printed_table(record, written, capsys.readouterr().out)
    systems = [r["system"] for r in record["records"]]
    assert systems == ["torch (Tagger.predict)", "ONNX fp32", "ONNX int8"]
    assert record["records"][1]["word_agreement_vs_torch"] == 1.0
    assert all(r["rate"] > 0 for r in record["records"])


def test_groups_to_tags_starts_a_new_entity_per_group() -> None:
    words = ["la", "sega", "game", "gear", "y", "ana", "luis"]
    groups = [
        {"entity_group": "CW", "start": 3, "end": 17},  # "sega game gear"
        {"entity_group": "PER", "start": 20, "end": 23},  # "ana"
        {"entity_group": "PER", "start": 24, "end": 28},  # "luis": a second entity
    ]
    tags = bench_inference.groups_to_tags(groups, words)
    assert tags == ["O", "B-CW", "I-CW", "I-CW", "O", "B-PER", "B-PER"]


def test_training_measures_padding_and_unfrozen_embeddings(
    tiny_bert_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    record, written = run_quick(
        bench_training,
        tmp_path,
        "--encoder",
        str(tiny_bert_dir),
        "--archs",
        "bert_crf",
        "bert_linear",
        "--devices",
        "cpu",
    )
    check_printed_table(record, written, capsys.readouterr().out)
    configs = [(r["arch"], r["freeze_embeddings"]) for r in record["records"]]
    assert configs == [("bert_crf", True), ("bert_linear", True), ("bert_crf", False)]
    for rec in record["records"]:
        assert rec["seconds_per_step"] > 0 and rec["peak_rss_mib"] >= rec["rss_delta_mib"]
        padding = record["padding"][rec["arch"]]
        assert rec["pad_share"] == pytest.approx(padding["bucketed"]["pad_share"])
        assert padding["random"]["pad_share"] >= padding["bucketed"]["pad_share"]
    frozen, unfrozen = record["records"][0], record["records"][2]
    assert unfrozen["trainable_params"] > frozen["trainable_params"]


def test_optimizer_times_each_adamw_and_fit_with_fused_on_and_off(
    tiny_bert_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    record, written = run_quick(
        bench_optimizer, tmp_path, "--encoder", str(tiny_bert_dir), "--devices", "cpu"
    )
    check_printed_table(record, written, capsys.readouterr().out)
    updates = [r for r in record["rows"] if r[0] == "update"]
    assert [r[1] for r in updates] == list(bench_optimizer.IMPLEMENTATIONS)
    assert all(r[4] > 0 for r in updates) and updates[0][6] == pytest.approx(1.0)
    epochs = [r for r in record["records"] if r["measure"] == "epoch"]
    assert [r["fused_adamw"] for r in epochs] == [False, True]
    assert epochs[0]["steps"] == epochs[1]["steps"] == 3  # 24 sentences, batch 8
    # The same rule: one short epoch from the same start ends at nearly the same loss.
    assert epochs[0]["loss"] == pytest.approx(epochs[1]["loss"], rel=1e-3)


def test_expected_max_matches_enumeration() -> None:
    lengths = sorted([5, 3, 9, 9, 2, 7, 4])
    for m in range(1, len(lengths) + 1):
        subsets = list(combinations(lengths, m))
        exact = Fraction(sum(max(s) for s in subsets), len(subsets))
        assert bench_training.expected_max(lengths, m) == exact
    rand = bench_training.random_batching_padding(lengths, 3)
    bucket = bench_training.bucketed_padding(lengths, 3)
    assert bucket["padded"] == 3 * 4 + 3 * 9 + 1 * 9  # [2,3,4] [5,7,9] [9]
    assert rand["pad_share"] >= bucket["pad_share"]


def test_trimmed_encoder_gives_the_full_encoders_tags_and_loss(
    tiny_bert_dir: Path, tmp_path: Path
) -> None:
    record, written = run_quick(bench_trim, tmp_path, "--encoder", str(tiny_bert_dir))
    assert written["benchmark"] == "trim" and len(record["rows"]) == 4
    trimmed = [r for r in record["records"] if r["encoder"] == "trimmed"]
    full = [r for r in record["records"] if r["encoder"] == "full"]
    assert all(r["same_val_tags"] for r in trimmed)
    for t, f in zip(trimmed, full, strict=True):
        assert t["vocab_rows"] < f["vocab_rows"]
        # Same seed, same corpus pieces: the epoch's loss does not depend on the unused rows.
        assert t["loss"] == pytest.approx(f["loss"], rel=1e-4)


def test_flops_per_piece_match_the_encoders_matrix_products() -> None:
    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=96,
    )
    model = BertModel(config, add_pooling_layer=False).eval()

    def linear_flops(pieces: int) -> int:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(input_ids=torch.ones(1, pieces, dtype=torch.long))
        counts = counter.get_flop_counts()["Global"]
        return sum(v for op, v in counts.items() if str(op) in ("aten.addmm", "aten.mm"))

    per_piece = bench_roofline.linear_flops_per_piece(config.to_dict())
    assert linear_flops(6) - linear_flops(5) == per_piece
    assert linear_flops(5) == 5 * per_piece


def test_roofline_sets_measured_rates_against_the_ceiling(
    tiny_bert_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    inference = tmp_path / "inference.json"
    records = [
        {"system": bench_inference.OURS_SYSTEM, "phase": "full", "device": "cpu", "rate": 50.0},
        {"system": bench_inference.PIPELINE_SYSTEM, "phase": "full", "device": "cpu", "rate": 25},
        {"system": bench_inference.OURS_SYSTEM, "phase": "full", "device": "cuda", "rate": 9e9},
        {"system": bench_inference.PIPELINE_SYSTEM, "phase": "sweep", "rate": 1.0},
    ]
    inference.write_text(json.dumps({"records": records}), encoding="utf-8")
    record, written = run_quick(
        bench_roofline,
        tmp_path,
        "--encoder",
        str(tiny_bert_dir),
        "--inference-json",
        str(inference),
    )
    check_printed_table(record, written, capsys.readouterr().out)
    assert record["ours_rate"] == 50.0 and record["pipeline_rate"] == 25.0  # CPU full rows only
    assert record["peak_gflops"] > 0 and len(record["sgemm_gflops"]) == 3
    ceiling = record["ceiling_rate"]
    assert ceiling == pytest.approx(record["peak_gflops"] * 1e9 / record["flops_per_sentence"])
    assert record["summary"][0]["met"] == (ceiling / 25.0 >= bench_inference.SPEEDUP_TARGET)


def test_quality_trains_each_arch_and_keeps_partial_rows(
    tiny_bert_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    record, written = run_quick(
        bench_quality,
        tmp_path,
        "--encoder",
        str(tiny_bert_dir),
        "--archs",
        "bert_crf",
        "bert_linear",
    )
    check_printed_table(record, written, capsys.readouterr().out)
    rows = record["rows_detail"]
    assert [(r["lang"], r["arch"]) for r in rows] == [("es", "bert_crf"), ("es", "bert_linear")]
    assert all(r["finished"] and r["epochs"] == 1 for r in rows)
    assert all(0 <= r["best_val_macro_f1"] <= 1 for r in rows)


def test_gpu_smoke_torch_and_onnx_agree_on_the_cpu(
    tiny_bert_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    record, written = run_quick(
        gpu_smoke, tmp_path, "--encoder", str(tiny_bert_dir), "--devices", "cpu"
    )
    check_printed_table(record, written, capsys.readouterr().out)
    checks = record["checks"]
    assert checks["device"] == "cpu"
    assert checks["emissions_max_abs_diff_onnx_vs_torch"] < 1e-4
    assert checks["same_words_onnx_vs_torch_cpu"] == 1.0
    assert checks["marginals_rows_sum_to_1"] is True


# --------------------------------------------------------------------------- overhead's set-up


def dvc_project(folder: Path, stages: str) -> Path:
    """A DVC repository (no git) with this ``stages:`` block and a params file."""
    from dvc.repo import Repo

    (folder / "params.yaml").write_text("langs: [es, zh]\narchs: [bert_crf]\n")
    (folder / "dvc.yaml").write_text("stages:\n" + stages)
    # DVC logs "Initialized DVC repository." through a handler that an earlier test may have
    # bound to a stream pytest has closed since; nothing of it is needed here.
    dvc_logger = logging.getLogger("dvc")
    level = dvc_logger.level
    dvc_logger.setLevel(logging.WARNING)
    try:
        Repo.init(str(folder), no_scm=True).close()
    finally:
        dvc_logger.setLevel(level)
    return folder


def test_stage_commands_follow_the_graph_with_items_expanded(tmp_path: Path) -> None:
    project = dvc_project(
        tmp_path,
        "  register: {cmd: complex-ner register, deps: [trained]}\n"
        "  ingest: {cmd: complex-ner ingest, outs: [raw]}\n"
        "  train:\n"
        "    matrix: {lang: '${langs}', arch: '${archs}'}\n"
        "    cmd: complex-ner train --lang ${item.lang} --arch ${item.arch}\n"
        "    deps: [raw]\n"
        "    outs: ['trained/${item.lang}']\n",
    )
    commands = bench_overhead.stage_commands(project)
    assert commands == [
        ("ingest", ["ingest"]),
        ("train@es-bert_crf", ["train", "--lang", "es", "--arch", "bert_crf"]),
        ("train@zh-bert_crf", ["train", "--lang", "zh", "--arch", "bert_crf"]),
        ("register", ["register"]),  # after the stages whose outputs it reads
    ]


def test_stage_commands_refuse_a_stage_that_is_not_a_cli_command(tmp_path: Path) -> None:
    project = dvc_project(tmp_path, "  shell: {cmd: echo hi}\n")
    with pytest.raises(ValueError, match="'shell' runs 'echo hi'"):
        bench_overhead.stage_commands(project)


def test_project_params_carry_the_overrides(tmp_path: Path) -> None:
    bench_overhead.write_params(tmp_path / "params.yaml", ["train.epochs=1", "data.languages=[es]"])
    params = load_params(tmp_path / "params.yaml")
    assert params.train.epochs == 1 and tuple(params.data.languages) == ("es",)
    with pytest.raises(ConfigError, match="train.no_such_key"):
        bench_overhead.write_params(tmp_path / "bad.yaml", ["train.no_such_key=1"])
