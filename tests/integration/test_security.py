"""Secrets never reach MLflow params, tags, links or the pipeline's log; the served model holds
nothing pickled.

A real ``mlflow server`` on 127.0.0.1 is reached through a tracking URI that carries a password,
with a credential in the environment; every param, tag and link the project records, and the
stage output the pipeline relays, are read back and searched for both.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from benchmarks.load_serving import free_port, wait_ready

from complex_ner.adapters import dvc, tracking
from complex_ner.adapters.registry import resolve_tagger_dir
from complex_ner.core.config import load_params
from complex_ner.core.paths import champion_uri

pytestmark = pytest.mark.integration
PASSWORD = "s3cr3t-PW-91"
TOKEN = "tok-5a4b3c2d1e"


@pytest.fixture
def tracking_server(tmp_path: Path) -> str:
    """``mlflow server`` on 127.0.0.1 with a SQLite store; its URL (no auth: the password in the
    URI is only carried, as a client of a real server would)."""
    port = free_port()
    bin_dir = Path(sys.executable).parent
    server = subprocess.Popen(
        [
            str(bin_dir / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
            "--workers",
            "1",
        ],
        cwd=tmp_path,
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}", 240, "/health")  # 45 s cold on a loaded host
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_a_password_in_the_tracking_uri_is_masked_everywhere(
    tracking_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_uri = tracking_server.replace("http://", f"http://alice:{PASSWORD}@")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", secret_uri)
    monkeypatch.setenv("MY_SERVICE_TOKEN", TOKEN)
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump({"data": {"source_dir": f"https://bob:{PASSWORD}@data.example/corpus"}}),
        encoding="utf-8",
    )
    params = load_params(tmp_path / "params.yaml")
    note = f"uri {secret_uri} token {TOKEN}"
    with tracking.pipeline_run(params, tags={"note": note}) as parent:
        tags = tracking.lineage_tags(params, "train", extra=note)
        with tracking.start_run(params, "child", tags, log_params=tracking.flat_params(params)):
            pass
        link = tracking.run_link(params, parent)
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_server)
    runs = client.search_runs([client.get_experiment_by_name(tracking.EXPERIMENT).experiment_id])
    assert len(runs) == 2
    recorded = json.dumps([[r.data.params, r.data.tags] for r in runs])
    assert "alice:***@" in recorded and "bob:***@" in recorded  # masked, not dropped
    assert PASSWORD not in recorded and TOKEN not in recorded
    assert link.startswith("http://alice:***@127.0.0.1:") and PASSWORD not in link
    # The stage output the pipeline relays to its log (MLflow prints run links there).
    lines: list[str] = []
    code = f"import os; print(os.environ['MLFLOW_TRACKING_URI']); print('token', {TOKEN!r})"
    dvc.stream([sys.executable, "-c", code], tmp_path, lines.append)
    assert lines == [secret_uri.replace(PASSWORD, "***"), "token ***"]


def test_the_served_model_holds_nothing_pickled(registry: Path) -> None:
    folder = resolve_tagger_dir(champion_uri("es"), load_params(registry / "params.yaml"))
    model_dir = next(p for p in folder.parents if (p / "MLmodel").is_file())
    files = [p for p in model_dir.rglob("*") if p.is_file()]
    assert files and not [
        p for p in files if p.suffix in {".pkl", ".pickle", ".pt", ".pth", ".bin"}
    ]
    flavor = yaml.safe_load((model_dir / "MLmodel").read_text(encoding="utf-8"))
    pyfunc = flavor["flavors"]["python_function"]
    assert "python_model" not in pyfunc and pyfunc.get("model_code_path")  # loaded from code
    assert {p.suffix for p in folder.rglob("*") if p.is_file()} <= {
        ".json",
        ".onnx",
        ".safetensors",
        ".txt",
        ".model",
        ".data",
        "",
    }
