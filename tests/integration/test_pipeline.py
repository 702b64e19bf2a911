"""The Prefect pipeline on a tiny budget in a git + DVC copy of the project: afterwards DVC's
record (dvc.lock, experiments) and MLflow's agree with what ran, for a plain run of params.yaml
and for a run with overrides."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DVC = str(Path(sys.executable).parent / "dvc")


@pytest.fixture(scope="module")
def prefect_server() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def _lock_params(repo: Path, stage: str) -> dict:
    lock = yaml.safe_load((repo / "dvc.lock").read_text(encoding="utf-8"))
    return lock["stages"][stage]["params"]["params.yaml"]


def test_plain_run_then_an_experiment(
    dvc_project: Path,
    prefect_server: None,
    sh: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlflow
    from flows.pipeline import pipeline

    from complex_ner.adapters.tracking import setup
    from complex_ner.core.config import load_params

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    repo = dvc_project
    params_file = repo / "params.yaml"

    # A plain run: every stage of dvc.yaml, then DVC has nothing left to do.
    first = pipeline(str(params_file))
    assert set(first["stages"]) >= {"ingest", "validate", "train@es-bert_crf", "register"}
    assert {s["status"] for s in first["stages"].values()} == {"ran"}
    assert first["experiment"] is None and first["pushed"]
    assert "up to date" in sh([DVC, "status"], repo)
    assert "Running stage" not in sh([DVC, "repro"], repo)
    assert "in sync" in sh([DVC, "status", "--cloud"], repo)  # the remote holds it all

    setup(load_params(params_file))
    client = mlflow.MlflowClient()
    assert {r["lang"] for r in first["runs"]} == {"es", "zh"}
    for r in first["runs"]:
        tags = client.get_run(r["run_id"]).data.tags
        assert tags["mlflow.parentRunId"] == first["parent_run_id"]
    assert {r["alias"] for r in first["registrations"]} == {"champion"}

    # Other settings: a DVC experiment that shows them; params.yaml is put back as it was. A
    # second BERT+CRF run with its own seed gets its own stage, MLflow run and report, and the
    # evaluate stage's ensemble.
    before = params_file.read_bytes()
    overrides = [
        "train.epochs=2",
        "train.lr_head=1.0e-7",
        "train.lr_encoder=1.0e-7",
        "train.lr_min=1.0e-8",
        "train.archs=[bert_crf, bert_crf-s7]",
        "evaluate.ensemble_rules=[vote]",
    ]
    second = pipeline(str(params_file), overrides, experiment="weak-head")
    assert params_file.read_bytes() == before
    ran = {n for n, s in second["stages"].items() if s["status"] == "ran"}
    assert {"train@es-bert_crf", "train@zh-bert_crf", "evaluate", "register"} <= ran
    assert {"train@es-bert_crf-s7", "train@zh-bert_crf-s7"} <= ran
    assert "ingest" not in ran
    seeded = [r for r in second["runs"] if r["arch"] == "bert_crf-s7"]
    assert {r["lang"] for r in seeded} == {"es", "zh"}
    for r in seeded:
        run = client.get_run(r["run_id"]).data
        assert (run.tags["arch"], run.tags["run"]) == ("bert_crf", "bert_crf-s7")
        assert run.params["train.seed"] == "7" and run.params["model.arch"] == "bert_crf"
        assert (repo / "models/trained" / r["lang"] / "bert_crf-s7/model/onnx.json").is_file()

    shown = json.loads(sh([DVC, "exp", "show", "--json"], repo))
    saved = [e for row in shown for e in (row.get("experiments") or []) if e["name"]]
    [exp] = [e for e in saved if e["name"] == "weak-head"]
    exp_data = exp["revs"][0]["data"]
    exp_params = exp_data["params"]["params.yaml"]["data"]
    assert exp_params["train"]["epochs"] == 2 and exp_params["train"]["lr_head"] == 1.0e-7
    metrics = exp_data["metrics"]["reports/metrics.json"]["data"]
    assert set(metrics) == {"es", "zh"}
    assert all(list(m) == ["bert_crf", "bert_crf-s7", "ensemble"] for m in metrics.values())
    # The lock describes the models it points to; `dvc status` says params.yaml now differs.
    assert _lock_params(repo, "train@es-bert_crf")["train"]["epochs"] == 2
    assert "up to date" not in sh([DVC, "status"], repo)

    parent = client.get_run(second["parent_run_id"]).data
    assert parent.tags["dvc_experiment"] == "weak-head"
    assert json.loads(parent.tags["overrides"]) == overrides
    assert parent.params["train.epochs"] == "2"
    for r in second["runs"]:
        run = client.get_run(r["run_id"]).data
        assert run.tags["mlflow.parentRunId"] == second["parent_run_id"]
        assert run.tags["dvc_experiment"] == "weak-head" and run.params["train.epochs"] == "2"
    assert {r["version"] for r in second["registrations"]} == {"2"}  # registered, as any run

    # The next plain run returns to params.yaml's settings.
    third = pipeline(str(params_file))
    assert third["stages"]["train@es-bert_crf"]["status"] in {"ran", "restored"}
    assert "up to date" in sh([DVC, "status"], repo)
