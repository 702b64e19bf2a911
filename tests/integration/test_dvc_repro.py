"""The DVC adapter against a scratch DVC project whose stages are shell commands: the graph comes
from DVC, stages run one at a time (also two at once), their output streams line by line, and
an experiment records the params it ran with."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import zc.lockfile

from complex_ner.adapters import dvc

pytestmark = pytest.mark.integration
DVC = str(Path(sys.executable).parent / "dvc")

PARAMS = """\
a:
  x: 1            # kept when a value changes
  ys: [p, q]
"""

PIPELINE = """\
stages:
  first:
    cmd: echo ${a.x} > o1
    params: [a.x]
    outs: [o1]
  fan:
    foreach: ${a.ys}
    do:
      cmd: sleep 1 && echo line-${item} && echo err-${item} >&2 && cp o1 t_${item}
      deps: [o1]
      outs: ["t_${item}"]
  last:
    cmd: cat t_p t_q > all
    deps: [t_p, t_q]
    outs: [all]
  slow:
    cmd: sleep 120
  broken:
    cmd: echo boom && exit 3
"""


@pytest.fixture
def project(tmp_path: Path, sh: Callable[..., str]) -> Path:
    repo = tmp_path / "scratch"
    repo.mkdir()
    (repo / "params.yaml").write_text(PARAMS, encoding="utf-8")
    (repo / "dvc.yaml").write_text(PIPELINE, encoding="utf-8")
    sh(["git", "init", "-q"], repo)
    sh([DVC, "init", "-q"], repo)
    sh([DVC, "config", "core.analytics", "false"], repo)
    sh(["git", "add", "-A"], repo)
    sh(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"], repo)
    return repo


def test_graph_runs_and_streams(project: Path, sh: Callable[..., str]) -> None:
    graph = dvc.stage_graph(project)
    assert [s.name for s in graph] == ["first", "fan@p", "fan@q", "last", "slow", "broken"]
    assert {s.name: s.upstream for s in graph}["last"] == ("fan@p", "fan@q")

    lines: list[str] = []
    assert dvc.run_stage(project, "first", lines.append).status == "ran"
    # Two stages at once: DVC releases its lock while a command runs and queues the rest.
    runs: dict[str, dvc.StageRun] = {}
    logs: dict[str, list[str]] = {"fan@p": [], "fan@q": []}
    threads = [
        threading.Thread(
            target=lambda n=name: runs.__setitem__(n, dvc.run_stage(project, n, logs[n].append))
        )
        for name in logs
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {n: r.status for n, r in runs.items()} == {"fan@p": "ran", "fan@q": "ran"}
    assert {"line-p", "err-p"} <= set(logs["fan@p"]), logs["fan@p"]
    assert dvc.run_stage(project, "last", lines.append).status == "ran"
    assert dvc.run_stage(project, "first", lines.append).status == "skipped"
    assert "up to date" in sh([DVC, "status", "first", "fan", "last"], project)

    # Outputs lost, inputs unchanged: DVC restores them from its run cache.
    (project / "all").unlink()
    assert dvc.run_stage(project, "last", lines.append).status == "restored"
    assert (project / "all").read_text() == "1\n1\n"


def test_waits_for_a_held_lock(project: Path) -> None:
    lock = zc.lockfile.LockFile(str(project / ".dvc" / "tmp" / "lock"))
    threading.Timer(2.0, lock.close).start()
    start = time.monotonic()
    assert dvc.run_stage(project, "first", lambda line: None).status == "ran"
    assert time.monotonic() - start >= 2.0


def test_failures_and_timeouts_name_the_stage(project: Path) -> None:
    with pytest.raises(dvc.DvcError, match="(?s)broken.*boom"):
        dvc.run_stage(project, "broken", lambda line: None)
    start = time.monotonic()
    with pytest.raises(dvc.DvcTimeoutError, match="slow"):
        dvc.run_stage(project, "slow", lambda line: None, timeout=3)
    assert time.monotonic() - start < 60  # the stage's `sleep 120` was stopped with it


def test_an_experiment_records_its_params(project: Path, sh: Callable[..., str]) -> None:
    dvc.set_params(project / "params.yaml", [(["a", "x"], 7), (["a", "ys"], ["p", "q", "r"])])
    text = (project / "params.yaml").read_text(encoding="utf-8")
    assert "x: 7            # kept when a value changes" in text and "ys: [p, q, r]" in text
    assert "fan@r" in [s.name for s in dvc.stage_graph(project)]  # the matrix follows params
    for name in ("first", "fan@p", "fan@q"):
        dvc.run_stage(project, name, lambda line: None)
    assert dvc.has_commit(project)
    assert dvc.valid_experiment_name(project, "x-7")
    assert not dvc.valid_experiment_name(project, "bad name..")
    # Only the stages that ran are committed: fan@r and last, never run, stay out of the lock.
    ran = ["first", "fan@p", "fan@q"]
    dvc.save_experiment(project, "x-7", ran, lambda line: None, include=["params.yaml"])
    assert "x-7" in dvc.experiment_names(project)
    lock = (project / "dvc.lock").read_text(encoding="utf-8")
    assert "fan@q" in lock and "fan@r" not in lock and "last" not in lock
    shown = json.loads(sh([DVC, "exp", "show", "--json"], project))
    exps = [e for row in shown for e in (row.get("experiments") or [])]
    [saved] = [e for e in exps if e.get("name") == "x-7"]
    params = saved["revs"][0]["data"]["params"]["params.yaml"]["data"]
    assert params["a"]["x"] == 7
