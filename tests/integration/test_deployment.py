"""`prefect deploy` + a process worker against a real local Prefect server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integration.test_pipeline import make_project

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def prefect(env: dict[str, str], *args: str, timeout: float = 600) -> str:
    done = subprocess.run(
        [str(BIN / "prefect"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_deploy_and_run_on_a_process_worker(tmp_path: Path, multiconer_dir: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    params = make_project(project, multiconer_dir, n=80)
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "COMPLEX_NER_VERSION_OUTPUTS": "0",
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_healthy(api)
        prefect(env, "work-pool", "create", "local-proc", "--type", "process")
        out = prefect(env, "--no-prompt", "deploy", "--all")
        assert "cpu-default" in out and "paper-budget" in out
        run_out = prefect(
            env,
            "deployment",
            "run",
            "pipeline/cpu-default",
            "--param",
            f"params_path={params}",
            "--param",
            "overrides=" + json.dumps(["train.epochs=1"]),
        )
        assert "Created flow run" in run_out
        prefect(env, "worker", "start", "--pool", "local-proc", "--run-once", timeout=900)
        with urllib.request.urlopen(
            urllib.request.Request(
                f"{api}/flow_runs/filter",
                data=b"{}",
                method="POST",
                headers={"Content-Type": "application/json"},
            ),
            timeout=10,
        ) as r:
            runs = json.loads(r.read())
        parents = [r for r in runs if r["parent_task_run_id"] is None and r["deployment_id"]]
        assert len(parents) == 1
        assert parents[0]["state"]["type"] == "COMPLETED", parents[0]["state"]
        assert (project / "reports/metrics.json").is_file()
        assert (project / "mlruns/mlflow.db").is_file()
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
