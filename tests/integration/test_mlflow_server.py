"""The registry on a real MLflow server over HTTP: PostgreSQL backend store, proxied artifacts
(``make mlflow-server``'s code, started by the ``mlflow_on_postgres`` fixture). A model logged
and registered through the server is resolved, loaded in a fresh process and served from
``models:/complex-ner-es@champion``; an alias moved by another client is followed at once."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from benchmarks.load_serving import served

from complex_ner.adapters.mlflow_server import (
    ARTIFACTS_DIR,
    CLUSTER_DIR,
    Server,
    wait_healthy,
)
from complex_ner.adapters.mlflow_server import free_port as free_tcp_port
from complex_ner.adapters.registry import (
    alias_file,
    download_dir,
    register_version,
    resolve_tagger_dir,
    set_alias,
)
from complex_ner.adapters.tracking import start_run
from complex_ner.core.config import Params, load_params
from complex_ner.core.paths import CHAMPION, ONNX_FILE, champion_uri, registered_name

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Params:
    """A project folder with default params (its tracking URI comes from the environment)."""
    root = tmp_path_factory.mktemp("remote-project")
    (root / "params.yaml").write_text("{}\n")
    return load_params(root / "params.yaml")


@pytest.fixture(autouse=True)
def _through_the_server(
    _no_leaked_tracking_uri: None, monkeypatch: pytest.MonkeyPatch, mlflow_on_postgres: Server
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_on_postgres.url)


@pytest.fixture(scope="module")
def champion(
    mlflow_on_postgres: Server, remote: Params, trained_tagger_dir: Path
) -> Iterator[dict[str, str]]:
    """The toy tagger logged and registered through the server as ``complex-ner-es@champion``
    (the registered model is deleted afterwards: other tests share the server)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_on_postgres.url)
        with start_run(remote, "server-test", {"kind": "test"}) as run:
            run.log_metrics({"val_macro_f1": 0.5}, step=1)
            run.log_artifact(trained_tagger_dir / "tagger.json", "files")
            info = run.log_pyfunc(trained_tagger_dir)
        version = register_version(remote, "es", info.model_uri, {})
        set_alias(remote, "es", CHAMPION, version)
    yield {"run_id": run.run_id, "version": version, "model_uri": info.model_uri}
    import mlflow

    mlflow.MlflowClient(mlflow_on_postgres.url).delete_registered_model(registered_name("es"))


def _env(server: Server) -> dict[str, str]:
    return {
        **os.environ,
        "MLFLOW_TRACKING_URI": server.url,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def test_runs_metrics_and_artifacts_go_through_the_server(
    mlflow_on_postgres: Server, remote: Params, champion: dict[str, str]
) -> None:
    import mlflow

    run = mlflow.MlflowClient(mlflow_on_postgres.url).get_run(champion["run_id"])
    assert run.data.metrics["val_macro_f1"] == 0.5 and run.data.tags["kind"] == "test"
    # Proxied: the client only knows mlflow-artifacts:/ URIs; the server wrote the files.
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    command = mlflow_on_postgres.command
    stored = Path(command[command.index("--artifacts-destination") + 1])
    assert stored.name == ARTIFACTS_DIR
    assert [p.name for p in stored.rglob("tagger.json") if p.parent.name == "files"] == [
        "tagger.json"
    ]
    listed = mlflow.artifacts.list_artifacts(run_id=champion["run_id"], artifact_path="files")
    assert [a.path for a in listed] == ["files/tagger.json"]


def test_the_champion_is_resolved_by_the_server_and_downloaded_once(
    mlflow_on_postgres: Server, remote: Params, champion: dict[str, str], trained_tagger_dir: Path
) -> None:
    import mlflow

    folder = resolve_tagger_dir(champion_uri("es"), remote)
    cached = download_dir(remote, registered_name("es"), champion["version"])
    assert cached in folder.parents and (folder / ONNX_FILE).is_file()
    assert not alias_file(remote).exists()  # a shared registry's aliases are never copied
    stamp = (folder / ONNX_FILE).stat().st_mtime_ns
    assert resolve_tagger_dir(champion_uri("es"), remote) == folder
    assert (folder / ONNX_FILE).stat().st_mtime_ns == stamp  # not downloaded again

    # Another client moves the alias to a new version: the next resolution follows it.
    newer = register_version(remote, "es", champion["model_uri"], {"note": "re-registered"})
    client = mlflow.MlflowClient(mlflow_on_postgres.url)
    client.set_registered_model_alias(registered_name("es"), CHAMPION, newer)
    try:
        moved = resolve_tagger_dir(champion_uri("es"), remote)
        assert download_dir(remote, registered_name("es"), newer) in moved.parents
    finally:
        client.set_registered_model_alias(registered_name("es"), CHAMPION, champion["version"])


def test_a_fresh_process_loads_and_predicts_with_the_champion(
    mlflow_on_postgres: Server, remote: Params, champion: dict[str, str]
) -> None:
    code = (
        "import json, mlflow\n"
        "model = mlflow.pyfunc.load_model('models:/complex-ner-es@champion')\n"
        "out = model.predict({'text': 'Luis vive en Quito'})\n"
        "print(json.dumps([e['type'] for e in out['entities'][0]]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=_env(mlflow_on_postgres),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["PER", "LOC"]

    cli = subprocess.run(
        [str(BIN / "complex-ner"), "predict", "--lang", "es", "Ana vive en Lima"],
        cwd=remote.root,
        env=_env(mlflow_on_postgres),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cli.returncode == 0, cli.stderr[-3000:]
    entities = json.loads(cli.stdout.strip().splitlines()[-1])["entities"]
    assert [(e["text"], e["type"]) for e in entities] == [("Ana", "PER"), ("Lima", "LOC")]


def test_mlflow_models_serve_takes_the_champion_from_the_server(
    mlflow_on_postgres: Server, champion: dict[str, str], free_port: int
) -> None:
    with served(champion_uri("es"), mlflow_on_postgres.url, free_port) as base:
        body = json.dumps({"dataframe_records": [{"text": "Marta vive en Cusco"}]}).encode()
        request = urllib.request.Request(
            f"{base}/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            entities = json.loads(answer.read())["predictions"][0]["entities"]
        assert [(e["text"], e["type"]) for e in entities] == [("Marta", "PER"), ("Cusco", "LOC")]


def test_the_make_target_runs_server_and_cluster_until_ctrl_c() -> None:
    """`make mlflow-server`'s command: a cluster created in its folder, the server healthy, and
    after Ctrl-C neither the server nor PostgreSQL left running."""
    folder = Path(tempfile.mkdtemp(prefix="mlflow-cli-"))
    folder.chmod(0o755)
    port, pg_port = free_tcp_port(), free_tcp_port()
    command = [str(BIN / "complex-ner"), "mlflow-server", "--folder", str(folder)]
    command += ["--port", str(port), "--pg-port", str(pg_port)]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONUNBUFFERED"] = "1"
    process = subprocess.Popen(
        command,
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # As in a terminal: a test run started in the background inherits SIGINT ignored,
        # and Python then raises no KeyboardInterrupt.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline()]  # the command line, then health, then the export
        while lines[-1] and not lines[-1].startswith("export"):
            lines.append(process.stdout.readline())
        assert lines[-1].strip() == f"export MLFLOW_TRACKING_URI={url}", "".join(lines)
        wait_healthy(url, process, timeout=10)
        process.send_signal(signal.SIGINT)  # Ctrl-C
        # Waits for the command itself: its output pipe may stay open a moment longer in a
        # server process that is still shutting down, which the checks below then catch.
        process.wait(timeout=180)
        assert process.returncode == 0, "".join(lines)
        assert (folder / CLUSTER_DIR / "PG_VERSION").is_file()
        assert not (folder / CLUSTER_DIR / "postmaster.pid").exists()  # PostgreSQL stopped
        with pytest.raises(OSError):
            urllib.request.urlopen(f"{url}/health", timeout=2)
    finally:
        if process.poll() is None:
            process.kill()
        shutil.rmtree(folder, ignore_errors=True)
