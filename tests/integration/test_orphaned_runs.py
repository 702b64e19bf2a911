"""Runs whose process died (SIGKILL, OOM, power loss) are closed as KILLED by the next run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from complex_ner.adapters import tracking
from complex_ner.adapters.tracking import PROCESS_TAG
from complex_ner.core.config import Params, load_params

pytestmark = pytest.mark.integration  # a subprocess gives a pid that is surely gone


def test_only_runs_of_dead_processes_on_this_host_are_closed(tmp_path: Path) -> None:
    import mlflow

    (tmp_path / "params.yaml").write_text("{}\n", encoding="utf-8")
    params: Params = load_params(tmp_path / "params.yaml")
    exp_id = tracking.setup(params)
    client = mlflow.MlflowClient()
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    host = socket.gethostname()
    processes = {
        "dead": f"{host}:{done.stdout.strip()}",
        "alive": f"{host}:{os.getpid()}",
        "elsewhere": f"another-{host}:1",
        "untagged": "",
    }
    ids = {}
    for name, process in processes.items():
        tags = {PROCESS_TAG: process} if process else {}
        ids[name] = client.create_run(exp_id, run_name=name, tags=tags).info.run_id

    with tracking.start_run(params, "next", tracking.lineage_tags(params, "train")) as run:
        assert client.get_run(run.run_id).data.tags[PROCESS_TAG] == tracking.this_process()

    status = {name: client.get_run(i).info.status for name, i in ids.items()}
    assert status == {
        "dead": "KILLED",
        "alive": "RUNNING",
        "elsewhere": "RUNNING",
        "untagged": "RUNNING",
    }
