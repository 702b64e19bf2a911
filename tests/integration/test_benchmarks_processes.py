"""Smoke tests of the benchmarks that start fresh Python processes: the CLI cold start and
``run_all`` running each benchmark in its own process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmarks import bench_coldstart, run_all

pytestmark = pytest.mark.integration


def test_coldstart_runs_the_cli_without_forbidden_imports(
    tiny_bert_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "coldstart.json"
    record = bench_coldstart.main(["--quick", "--encoder", str(tiny_bert_dir), "--json", str(path)])
    assert json.loads(path.read_text(encoding="utf-8"))["table"] == record["table"]
    assert record["failures"] == []
    assert record["forbidden_imported"] == []
    assert "onnxruntime" in record["imports"]  # the -X importtime output was parsed
    assert record["median_s"] > 0


def test_run_all_runs_each_benchmark_in_its_own_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    combined = run_all.main(["--quick", "--only", "roofline", "--json", str(tmp_path / "a.json")])
    out = capsys.readouterr().out
    assert combined["failed"] == []
    assert "$ -m benchmarks.bench_roofline" in out and combined["table"] in out
