"""`prefect deploy` + a process worker against a real local Prefect server on 127.0.0.1: the
`cpu-default` deployment runs the pipeline in a git + DVC copy of the project and leaves DVC
with nothing to do."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BIN = Path(sys.executable).parent


def wait_healthy(url: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"Prefect server at {url} not healthy after {timeout}s")


def flow_runs(api: str) -> list[dict]:
    request = urllib.request.Request(
        f"{api}/flow_runs/filter",
        data=b"{}",
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read())


def test_deploy_and_run_on_a_process_worker(
    tmp_path: Path, dvc_project: Path, free_port: int, sh: Callable[..., str]
) -> None:
    repo = dvc_project
    api = f"http://127.0.0.1:{free_port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    prefect = str(BIN / "prefect")
    server = subprocess.Popen(
        [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(free_port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_healthy(api)
        sh([prefect, "work-pool", "create", "local-proc", "--type", "process"], repo, env)
        # Deployed from the copy: flow runs start in it and read its params.yaml.
        out = sh([prefect, "--no-prompt", "deploy", "--all"], repo, env)
        assert "cpu-default" in out and "paper-budget" in out
        run_out = sh([prefect, "deployment", "run", "pipeline/cpu-default"], repo, env)
        assert "Created flow run" in run_out
        sh([prefect, "worker", "start", "--pool", "local-proc", "--run-once"], repo, env)
        parents = [r for r in flow_runs(api) if r["deployment_id"]]
        assert len(parents) == 1
        assert parents[0]["state"]["type"] == "COMPLETED", parents[0]["state"]
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
    dvc = str(BIN / "dvc")
    assert "up to date" in sh([dvc, "status"], repo)
    assert "Running stage" not in sh([dvc, "repro"], repo)
    assert json.loads((repo / "reports" / "metrics.json").read_text(encoding="utf-8"))
