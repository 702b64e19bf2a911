"""`dvc repro` of the whole pipeline in a temporary copy of the repository, on a tiny model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.integration.test_pipeline import make_project

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 900) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(cmd)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_dvc_repro_push_pull(tmp_path: Path, root: Path, multiconer_dir: Path) -> None:
    repo = tmp_path / "repo"
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for rel in files:
        if rel == "dvc.lock" or not (root / rel).is_file():
            continue
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, repo / rel)
    # Small real slices and a tiny encoder, written into the copy's params.yaml.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    tiny_params = yaml.safe_load(make_project(scratch, multiconer_dir, n=80).read_text())
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["source_dir"] = str(scratch / "src")
    params["split"].update(tiny_params["split"])
    params["model"].update(tiny_params["model"])
    params["train"].update(tiny_params["train"], epochs=1)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    run(["git", "init", "-q"], repo, env)
    out = run([str(BIN / "dvc"), "repro"], repo, env)
    for stage in ("ingest", "validate", "split", "stats", "provision", "evaluate", "register"):
        assert f"Running stage '{stage}'" in out
    assert "Running stage 'train@es-bert_crf'" in out
    status = run([str(BIN / "dvc"), "status"], repo, env)
    assert "up to date" in status, status
    metrics = json.loads(run([str(BIN / "dvc"), "metrics", "show", "--json"], repo, env))
    assert "reports/metrics.json" in json.dumps(metrics)
    registry = json.loads((repo / "reports/registry.json").read_text())
    assert {r["alias"] for r in registry.values()} == {"champion"}
    # The default remote needs no server: push, lose the raw data, pull it back.
    run([str(BIN / "dvc"), "push", "-q"], repo, env)
    raw = (repo / "data/raw/es/train.conll").read_bytes()
    shutil.rmtree(repo / "data/raw")
    run([str(BIN / "dvc"), "pull", "-q"], repo, env)
    assert (repo / "data/raw/es/train.conll").read_bytes() == raw
    assert "up to date" in run([str(BIN / "dvc"), "status"], repo, env)
