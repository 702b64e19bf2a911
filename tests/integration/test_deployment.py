"""`prefect deploy` + a process worker against a real local Prefect server on 127.0.0.1: every
deployment of prefect.yaml deploys (its pools created), and `cpu-default` runs the pipeline in a
git + DVC copy of the project and leaves DVC with nothing to do."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import flow_runs, prefect_api

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BIN = Path(sys.executable).parent


def test_deploy_and_run_on_a_process_worker(
    tmp_path: Path, dvc_project: Path, free_port: int, sh: Callable[..., str]
) -> None:
    repo = dvc_project
    prefect = str(BIN / "prefect")
    with prefect_api(tmp_path / "prefect-home", free_port) as env:
        for pool, kind in (("local-proc", "process"), ("train-proc", "process")):
            sh([prefect, "work-pool", "create", pool, "--type", kind], repo, env)
        sh([prefect, "work-pool", "create", "gpu-k8s", "--type", "kubernetes"], repo, env)
        # Deployed from the copy: flow runs start in it and read its params.yaml.
        out = sh([prefect, "--no-prompt", "deploy", "--all"], repo, env)
        assert all(name in out for name in ("cpu-default", "paper-budget", "pooled", "train-k8s"))
        run_out = sh([prefect, "deployment", "run", "pipeline/cpu-default"], repo, env)
        assert "Created flow run" in run_out
        sh([prefect, "worker", "start", "--pool", "local-proc", "--run-once"], repo, env)
        parents = [r for r in flow_runs(env["PREFECT_API_URL"]) if r["deployment_id"]]
        assert len(parents) == 1
        assert parents[0]["state"]["type"] == "COMPLETED", parents[0]["state"]
    dvc = str(BIN / "dvc")
    assert "up to date" in sh([dvc, "status"], repo)
    assert "Running stage" not in sh([dvc, "repro"], repo)
    assert json.loads((repo / "reports" / "metrics.json").read_text(encoding="utf-8"))
