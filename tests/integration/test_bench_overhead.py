"""Smoke test of ``benchmarks/bench_overhead.py --quick``: the whole Prefect pipeline and the bare
path each run once in a subprocess (tiny random BERT, 120 real sentences). Too slow for the unit
smoke tests (about 2 minutes: a fresh Prefect server and MLflow store), and the GX gate needs the
real data, so it lives here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_overhead_quick(
    multiconer_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks import bench_overhead

    path = tmp_path / "overhead.json"
    result = bench_overhead.main(["--quick", "--json", str(path)])
    out = capsys.readouterr().out

    header = "| " + " | ".join(bench_overhead.COLUMNS) + " |"
    assert result["columns"] == bench_overhead.COLUMNS
    assert result["table"].splitlines()[0] == header and header in out
    assert len(result["table"].splitlines()) == 2 + len(result["rows"])
    assert json.loads(path.read_text())["table"] == result["table"]

    bare, pipe = result["derived"]["bare"][0], result["derived"]["pipeline"][0]
    for d in (bare, pipe):
        assert d["wall"] > 0 and d["train_loop"] > 0 and d["fit"] >= d["train_loop"]
    # Only the pipeline has Prefect, GX and MLflow parts; all of them were seen.
    assert bare["prefect_server_start"] is None and bare["mlflow_total"] is None
    assert pipe["prefect_server_start"] > 0 and pipe["gx"] > 0
    # The server started inside flows.pipeline.run's warm start, as under `make run`.
    assert pipe["warm_start"] >= pipe["prefect_server_start"]
    assert pipe["mlflow_pyfunc"] > 0 and pipe["mlflow_register"] > 0
    assert pipe["prefect_flow_record"] is not None
    assert pipe["unattributed_work"] < 0.1 * pipe["wall"]
    # Both sides trained the same model on the same data.
    records = result["records"]
    assert records["bare"][0]["result"]["summary"].keys() == {"es"}
    assert records["pipeline"][0]["result"]["summary"].keys() == {"es"}
    assert [r["alias"] for r in records["pipeline"][0]["result"]["registrations"]] == ["champion"]
    assert result["overhead_s"] == pytest.approx(pipe["wall"] - bare["wall"])
    assert {row["metric"] for row in result["summary"]} >= {
        "overhead at this config (s)",
        "overhead extrapolated to make run, % of bare",
    }
