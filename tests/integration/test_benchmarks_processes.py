"""Smoke tests of the benchmarks that start fresh Python processes: the CLI cold start, the
CRF kernel's one-off costs and ``run_all`` running each benchmark in its own process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmarks import bench_coldstart, bench_crf, run_all

pytestmark = pytest.mark.integration


def test_coldstart_runs_the_cli_without_forbidden_imports(
    tiny_bert_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "coldstart.json"
    record = bench_coldstart.main(["--quick", "--encoder", str(tiny_bert_dir), "--json", str(path)])
    assert json.loads(path.read_text(encoding="utf-8"))["table"] == record["table"]
    assert record["failures"] == []
    assert record["forbidden_imported"] == []
    assert "torch" in record["imports"]  # the -X importtime output was parsed
    assert record["median_s"] > 0


def test_crf_kernel_costs_come_from_fresh_processes(tmp_path: Path) -> None:
    record = bench_crf.main(["--quick", "--random-inputs", "5", "--devices", "cpu"])
    costs = record["kernel_costs"]
    for label in ("cold", "cached"):
        assert costs[label]["same_paths"] is True and costs[label]["first_call_s"] > 0
    # Importing the CRF module does not import numba: a one-sentence process never pays it.
    assert costs["cold"]["numba_imported_by_crf_import"] is False


def test_run_all_runs_each_benchmark_in_its_own_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    combined = run_all.main(["--quick", "--only", "roofline", "--json", str(tmp_path / "a.json")])
    out = capsys.readouterr().out
    assert combined["failed"] == []
    assert "$ -m benchmarks.bench_roofline" in out and combined["table"] in out
