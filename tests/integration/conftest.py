"""Fixtures of the pipeline tests: a committed git + DVC copy of the project on a tiny budget."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from complex_ner.adapters.mlflow_server import (
    Server,
    running,
    tracking_server,
)
from complex_ner.adapters.mlflow_server import free_port as free_tcp_port
from complex_ner.app import stages
from complex_ner.domain.data import Sentence, format_conll, read_conll
from tests.integration.reliability import CliProject, Race, toy_project

BIN = Path(sys.executable).parent


def run(
    cmd: Sequence[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 900
) -> str:
    """Run a command; fail the test with its output when it exits non-zero."""
    done = subprocess.run(
        list(cmd), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{' '.join(cmd)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture
def sh() -> Callable[..., str]:
    """``sh(cmd, cwd, env=None, timeout=900)``: run a command, return its stdout; a non-zero
    exit fails the test with the command's output."""
    return run


@pytest.fixture
def dvc_project(tmp_path: Path, root: Path, multiconer_dir: Path, tiny_bert_dir: Path) -> Path:
    """A committed git + DVC copy of the project (its tracked and not-ignored files, without
    dvc.lock) whose params.yaml trains the tiny BERT for one epoch on the first 80 real
    sentences of each language. Its DVC remote is a folder inside the copy."""
    repo = tmp_path / "repo"
    files = run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], root).split()
    for rel in files:
        if rel == "dvc.lock" or not (root / rel).is_file():
            continue
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, repo / rel)
    source = tmp_path / "multiconer"
    for lang in ("es", "zh"):
        sentences = read_conll(multiconer_dir / lang / "train.conll")[:80]
        (source / lang).mkdir(parents=True)
        (source / lang / "train.conll").write_text(format_conll(sentences), encoding="utf-8")
    params = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
    params["data"]["source_dir"] = str(source)
    params["split"]["val_fraction"] = 0.25
    params["model"].update(encoder=str(tiny_bert_dir), max_length=64, stride=16, dropout=0.1)
    params["train"].update(
        epochs=1,
        batch_size=16,
        lr_encoder=2.0e-3,
        lr_min=1.0e-4,
        lr_head=1.0e-2,
        schedule="constant",
        freeze_embeddings=False,
        threads=1,
    )
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    env = {**os.environ, "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com"}
    env.update(GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@example.com")
    run(["git", "init", "-q"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-q", "-m", "tiny project"], repo, env)
    return repo


@pytest.fixture(autouse=True)
def _no_leaked_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI: one test's store must not become
    the next test's registry (each project's default is its own mlruns/)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="session")
def mlflow_on_postgres() -> Iterator[Server]:
    """A real MLflow server (``make mlflow-server``'s code) on its own PostgreSQL cluster in a
    temporary folder, both on 127.0.0.1, artifacts proxied into the folder; for the session.

    The folder is made searchable by others: as root the cluster runs as ``postgres``.
    """
    folder = Path(tempfile.mkdtemp(prefix="mlflow-pg-"))
    folder.chmod(0o755)
    try:
        with tracking_server(folder, port=free_tcp_port(), pg_port=free_tcp_port()) as server:
            yield server
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def prefect_api(home: Path, port: int) -> Iterator[dict[str, str]]:
    """``prefect server start`` on 127.0.0.1:``port`` (SQLite under ``home``) for the block;
    yields the environment of its clients (``PREFECT_API_URL``, the venv on PATH)."""
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    command = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with running(command, env["PREFECT_API_URL"], env=env, timeout=120, stop_signal=signal.SIGINT):
        yield env


def flow_runs(api: str) -> list[dict]:
    """Every flow run the Prefect server at ``api`` knows (its REST API)."""
    request = urllib.request.Request(
        f"{api}/flow_runs/filter",
        data=b"{}",
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory, trained_tagger_dir: Path) -> Path:
    """A project whose MLflow registry holds the toy tagger as ``complex-ner-es@champion``
    (the serving, load and security tests)."""
    from benchmarks.load_serving import register_champion

    root = tmp_path_factory.mktemp("registry")
    register_champion(root, trained_tagger_dir)
    return root


@pytest.fixture(scope="session")
def champion_url(registry: Path) -> Iterator[str]:
    """``mlflow models serve`` of :func:`registry`'s champion on 127.0.0.1; its base URL."""
    from benchmarks.load_serving import served

    tracking = f"sqlite:///{registry / 'mlruns' / 'mlflow.db'}"
    with served("models:/complex-ner-es@champion", tracking) as url:
        yield url


@pytest.fixture(scope="module")
def cli_project(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_bert_dir: Path,
    conll_sample: Callable[[str, int], tuple[list[list[str]], list[list[str]]]],
) -> CliProject:
    """A project folder for the real ``complex-ner`` command on a tiny budget: 60 synthetic
    Spanish sentences in its source folder (nothing ingested yet), the tiny random BERT, three
    one-thread epochs of 5 steps, its own MLflow store. Shared by the tests of one module, which
    take it through the pipeline in order."""
    from complex_ner.domain.data import Sentence, write_conll

    root = tmp_path_factory.mktemp("cli") / "project"
    words, tags = conll_sample("es", 60)
    sentences = [
        Sentence(id=f"s{i}", tokens=tuple(w), tags=tuple(t))
        for i, (w, t) in enumerate(zip(words, tags, strict=True))
    ]
    write_conll(root / "source" / "es" / "train.conll", sentences)
    config = {
        "data": {"source_dir": str(root / "source"), "languages": ["es"]},
        "split": {"val_fraction": 0.2, "heldout_fraction": 0.2},
        "trim": {"enabled": False},
        "model": {"encoder": str(tiny_bert_dir), "dropout": 0.1, "max_length": 64, "stride": 16},
        "train": {
            "languages": ["es"],
            "archs": ["bert_crf"],
            "by_language": {},
            "epochs": 3,
            "batch_size": 8,
            "lr_encoder": 3e-3,
            "lr_min": 1e-4,
            "lr_head": 3e-2,
            "schedule": "constant",
            "device": "cpu",
            "threads": 1,
        },
    }
    (root / "params.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return CliProject(root)


@pytest.fixture(scope="module")
def race(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_bert_dir: Path,
    toy_corpus: Callable[[int], list[Sentence]],
) -> Iterator[Race]:
    base = tmp_path_factory.mktemp("race")
    store = f"sqlite:///{base / 'store' / 'mlflow.db'}"
    env = {"MLFLOW_TRACKING_URI": store}
    data = toy_corpus(24)
    # Six epochs learn the toy corpus; one at a rate of 1e-9 learns nothing.
    toy_project(base / "good", tiny_bert_dir, data, {"epochs": 6, "threads": 1})
    rates = {"lr_encoder": 1e-9, "lr_min": 1e-10, "lr_head": 1e-9}
    toy_project(base / "bad", tiny_bert_dir, data, {"epochs": 1, "threads": 1, **rates})
    good, bad = CliProject(base / "good", env), CliProject(base / "bad", env)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", store)
        for project in (good, bad):
            stages.train(project.params, "es", "bert_crf", log=None)
            stages.evaluate(project.params, "es", "bert_crf")
        race = Race(good, bad, store)
        scores = race.scores()
        assert scores["good"] > scores["bad"], scores
        yield race
