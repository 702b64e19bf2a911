"""The team set-up end to end (slow: `make test-scaling`): the pipeline on a tiny model, its
training stages on a Prefect process work pool polled by two workers under a one-slot ``cpu``
global concurrency limit, tracking and registry on the MLflow server over PostgreSQL; and the
same training in one process, the reference the pooled results must equal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from complex_ner.adapters.mlflow_server import Server, stop_process_group
from complex_ner.adapters.mlflow_server import free_port as free_tcp_port
from complex_ner.app.pipeline import CPU_LIMIT, on_pool, stages
from complex_ner.core.paths import CHAMPION, HISTORY_FILE, RUN_FILE, registered_name
from tests.integration.conftest import flow_runs, prefect_api

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.scaling]
BIN = Path(sys.executable).parent
ARCHS = ["bert_crf", "bert_linear"]
LANGS = ["es", "zh"]


def _with_archs(repo: Path, sh: Callable[..., str]) -> None:
    """The language x architecture matrix: 2 x 2 training stages."""
    params = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
    params["train"]["archs"] = ARCHS
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    sh(["git", "commit", "-qam", "two architectures"], repo)


def _history(repo: Path, lang: str, arch: str) -> list[dict]:
    path = repo / "models" / "trained" / lang / arch / HISTORY_FILE
    return json.loads(path.read_text(encoding="utf-8"))


def test_the_training_matrix_on_two_pool_workers(
    tmp_path: Path, dvc_project: Path, mlflow_on_postgres: Server, sh: Callable[..., str]
) -> None:
    import mlflow

    repo = dvc_project
    git_env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com"}
    git_env.update(GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
    _with_archs(repo, lambda cmd, cwd: sh(cmd, cwd, git_env))
    reference = tmp_path / "reference"
    sh(["git", "clone", "-q", str(repo), str(reference)], tmp_path)
    prefect, python = str(BIN / "prefect"), str(BIN / "python")
    logs = tmp_path / "logs"
    logs.mkdir()

    with prefect_api(tmp_path / "prefect-home", free_tcp_port()) as env:
        api = env["PREFECT_API_URL"]
        sh([prefect, "work-pool", "create", "train-proc", "--type", "process"], repo, env)
        sh([prefect, "gcl", "create", CPU_LIMIT, "--limit", "1"], repo, env)
        sh([prefect, "--no-prompt", "deploy", "--name", "train-local"], repo, env)
        worker_env = {**env, "PREFECT_WORKER_QUERY_SECONDS": "2"}
        workers = []
        for name in ("w1", "w2"):
            with (logs / f"{name}.log").open("wb") as log:
                workers.append(
                    subprocess.Popen(
                        [prefect, "worker", "start", "--pool", "train-proc", "--limit", "1"]
                        + ["--name", name],
                        cwd=repo,
                        env=worker_env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        try:
            pooled_env = {**env, "MLFLOW_TRACKING_URI": mlflow_on_postgres.url}
            pipeline = [python, "flows/pipeline.py", "--train-deployment", "stage/train-local"]
            start = time.perf_counter()
            sh(pipeline, repo, pooled_env, timeout=1800)
            pooled_s = time.perf_counter() - start
            pool_runs = [r for r in flow_runs(api) if r["deployment_id"]]
        finally:
            for worker in workers:
                stop_process_group(worker, sig=2)
        # The reference: the same training stages in one process, one after another.
        start = time.perf_counter()
        sh([python, "flows/pipeline.py", "--target", "train"], reference, env, timeout=1800)
        alone_s = time.perf_counter() - start

    # Every pool stage ran once, on the pool, and completed.
    expected = [s.name for s in stages(repo) if on_pool(s.name)]
    assert {f"train@{lang}-{arch}" for lang in LANGS for arch in ARCHS} <= set(expected)
    assert Counter(r["name"] for r in pool_runs) == Counter(expected)
    assert {r["state"]["type"] for r in pool_runs} == {"COMPLETED"}
    records = [json.loads(r["state"]["message"]) for r in pool_runs]
    # What `make test-scaling` shows (pytest -s): where each stage ran and how long it waited.
    print(f"\npooled pipeline {pooled_s:.0f} s; the training stages in one process {alone_s:.0f} s")
    for r in sorted(records, key=lambda r: r["started"]):
        ran, queued = r["finished"] - r["started"], r["queued_s"]
        print(f"{r['name']:24} worker {r['worker_pid']} queued {queued:6.1f} s, ran {ran:.1f} s")
    assert {r["status"] for r in records} == {"ran"}
    # Both workers took stages; the one cpu slot made them queue, never train side by side.
    assert {r["worker_pid"] for r in records} == {w.pid for w in workers}
    assert {r["limit"] for r in records} == {CPU_LIMIT}
    spans = sorted((r["started"], r["finished"]) for r in records)
    assert all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:], strict=False))
    assert max(r["queued_s"] for r in records) > 1.0

    # The same results as one process: the same loss and validation scores, epoch by epoch.
    for lang in LANGS:
        for arch in ARCHS:
            pooled, alone = _history(repo, lang, arch), _history(reference, lang, arch)
            keys = ("loss", "val_macro_f1", "val_micro_f1")
            assert [[h[k] for k in keys] for h in pooled] == [[h[k] for k in keys] for h in alone]
    assert "up to date" in sh([str(BIN / "dvc"), "status"], repo)

    # MLflow over HTTP: nested runs with metrics and artifacts, the registry's champions.
    client = mlflow.MlflowClient(mlflow_on_postgres.url)
    for lang in LANGS:
        for arch in ARCHS:
            record = repo / "models" / "trained" / lang / arch / RUN_FILE
            run = client.get_run(json.loads(record.read_text(encoding="utf-8"))["run_id"])
            assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
            assert "mlflow.parentRunId" in run.data.tags and "val_macro_f1" in run.data.metrics
            assert client.list_artifacts(run.info.run_id)
        champion = client.get_model_version_by_alias(registered_name(lang), CHAMPION)
        assert champion.run_id is not None
    out = sh(
        [str(BIN / "complex-ner"), "predict", "--lang", "zh", "我在北京看了红楼梦"],
        repo,
        {**os.environ, "MLFLOW_TRACKING_URI": mlflow_on_postgres.url},
    )
    assert "entities" in json.loads(out.strip().splitlines()[-1])
