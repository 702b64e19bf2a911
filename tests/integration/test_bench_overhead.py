"""Smoke test of ``python -m benchmarks.bench_overhead --quick``: the Prefect pipeline and the bare
loop over the application layer each run once in a fresh process and project (tiny random BERT,
120 real sentences: the data gate wants every entity type). Minutes, not seconds: a fresh
Prefect server, MLflow store and DVC repository per side."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmarks import bench_overhead

pytestmark = pytest.mark.integration


def test_overhead_quick(
    multiconer_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "overhead.json"
    record = bench_overhead.main(["--quick", "--json", str(path)])
    out = capsys.readouterr().out
    assert record["table"] in out
    assert json.loads(path.read_text(encoding="utf-8"))["table"] == record["table"]

    stages = record["stages"]
    assert stages[0] == "ingest" and any(s.startswith("train@") for s in stages)
    bare, pipe = record["derived"]["bare"][0], record["derived"]["pipeline"][0]
    for side in (bare, pipe):
        assert side["wall"] > 0 and side["train_loop"] > 0
        # Every stage of dvc.yaml ran on both sides: called by the loop, or as a Prefect task.
        assert all(side[f"stage:{s}"] is not None for s in stages)
    assert bare["prefect_before_flow"] is None and pipe["prefect_before_flow"] is not None
    # The bare loop's stages account for its work (reading DVC's graph aside).
    assert 0.8 * bare["work"] <= sum(bare[f"stage:{s}"] for s in stages) <= bare["work"]
    assert record["overhead_s"] == pytest.approx(pipe["wall"] - bare["wall"])
    assert {row["metric"] for row in record["summary"]} >= {"fixed cost (s)"}
