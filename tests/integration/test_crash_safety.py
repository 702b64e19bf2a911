"""Crash safety: the real ``complex-ner`` command is SIGKILLed inside every stage that writes.

After each kill no half-written output is visible (every output is the old one, the new one or
absent: ``reliability.problems`` and ``assert_old_or_new``), the registry is consistent, and
rerunning the same command completes; training resumed with ``--resume`` after a mid-epoch kill
ends with the metrics, tags and weights of an uninterrupted run.

Kill points are deterministic: ``faultrun.py`` kills the process at the Nth rename (an atomic
write's commit) or the Nth file opened for writing whose path matches, or the test polls for a
file to appear and kills then. The tests of this module share one tiny project and take it
through the pipeline in order (ingest, split, train, register, predict-batch); the exhaustive
runs over every kill point are in ``test_reliability_long.py``.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from complex_ner.adapters import tracking
from complex_ner.adapters.tracking import PROCESS_TAG
from complex_ner.app import serve, stages
from complex_ner.core.config import Params
from complex_ner.core.paths import CHALLENGER, CHAMPION, RUN_FILE, run_dir, split_file
from complex_ner.domain.data import read_conll, write_conll
from tests.integration.reliability import (
    TIMINGS,
    CliProject,
    add_source_sentence,
    assert_old_or_new,
    problems,
    registry_problems,
    registry_state,
    snapshot,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def kill_and_rerun(
    project: CliProject, args: tuple[str, ...], mode: str, match: str, at: int
) -> tuple[dict[str, str], dict[str, str], dict[str, str], str]:
    """Kill ``complex-ner <args>`` at one point, check what is visible, rerun it; the
    snapshots before, after the kill and after the rerun, and the rerun's stdout."""
    before = snapshot(project.root)
    project.killed(*args, mode=mode, match=match, at=at)
    killed = snapshot(project.root)
    assert not problems(project.root)
    stdout = project.ok(*args)
    after = snapshot(project.root)
    assert not problems(project.root)
    return before, killed, after, stdout


def test_ingest_killed_between_its_two_renames_then_rerun(cli_project: CliProject) -> None:
    stages.ingest(cli_project.params)  # the old data/raw
    add_source_sentence(cli_project)
    # Rename 1 moves the old data/raw aside, rename 2 moves the new one in: killed between
    # them, data/raw is absent (never partial) and the rerun writes the new one.
    before, killed, after, stdout = kill_and_rerun(cli_project, ("ingest",), "replace", "/data/", 2)
    assert not any(p.startswith("data/raw/") for p in killed)
    assert_old_or_new(before, killed, after)
    assert after["data/raw/es/train.conll"] != before["data/raw/es/train.conll"]


def test_split_killed_while_writing_then_rerun(cli_project: CliProject) -> None:
    params = cli_project.params
    stages.validate(params)
    before_files = {n: split_file(params, "es", n) for n in ("train", "val", "heldout")}
    # Killed just after the second split file was opened (created empty): the visible
    # folder is the old one, whole (or, this project's first split, absent).
    before, killed, after, stdout = kill_and_rerun(
        cli_project, ("split",), "open", "/processed/", 2
    )
    assert_old_or_new(before, killed, after)
    assert all(path.is_file() for path in before_files.values())
    sentences = {n: {" ".join(s.tokens) for s in read_conll(p)} for n, p in before_files.items()}
    assert not sentences["train"] & sentences["heldout"]


def _metric_histories(run_id: str) -> dict[str, list[tuple[int, float]]]:
    import mlflow

    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    return {
        key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
        for key in run.data.metrics
        if key not in TIMINGS
    }


def _tags(run_id: str) -> dict[str, str]:
    import mlflow

    tags = mlflow.MlflowClient().get_run(run_id).data.tags
    # Who started the run: pytest for the reference, the command for the resumed one.
    return {
        k: v for k, v in tags.items() if not k.startswith("mlflow.source.") and k != PROCESS_TAG
    }


def _runs_by_status(params: Params) -> dict[str, list[str]]:
    import mlflow

    exp_id = tracking.setup(params)
    out: dict[str, list[str]] = {}
    for run in mlflow.MlflowClient().search_runs([exp_id], max_results=1000):
        out.setdefault(run.info.status, []).append(run.info.run_id)
    return {k: sorted(v) for k, v in out.items()}


def test_training_killed_mid_epoch_resumes_to_the_uninterrupted_run(
    cli_project: CliProject,
) -> None:
    params = cli_project.params
    out = run_dir(params, "es", "bert_crf")
    reference = stages.train(params, "es", "bert_crf", log=None)  # uninterrupted, same seed
    history = json.loads((out / "history.json").read_text(encoding="utf-8"))
    assert len(history) == 3
    before = snapshot(cli_project.root)

    # Killed as soon as epoch 1's checkpoint is there: inside epoch 2.
    proc = cli_project.start("train", "--lang", "es")
    state = out / "checkpoint" / "state.json"
    deadline = time.monotonic() + 300
    while not state.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    epoch = json.loads(state.read_text(encoding="utf-8"))["epoch"]
    assert 1 <= epoch < 3, "the kill did not land inside the run"
    killed = snapshot(cli_project.root)
    assert not problems(cli_project.root)
    # The old model stays whole and published; the run file of the killed run is absent.
    model = {
        p: d
        for p, d in before.items()
        if p.startswith(f"{out.relative_to(cli_project.root)}/model/")
    }
    assert model and all(killed.get(p) == d for p, d in model.items())
    assert not (out / RUN_FILE).exists()

    killed_runs = _runs_by_status(params)["RUNNING"]  # MLflow never heard of the kill
    assert len(killed_runs) == 1

    cli_project.ok("train", "--lang", "es", "--resume")
    # The next run found the dead process behind the open run and closed it.
    assert _runs_by_status(params) == {
        "FINISHED": _runs_by_status(params)["FINISHED"],
        "KILLED": killed_runs,
    }
    after = snapshot(cli_project.root)
    assert not problems(cli_project.root)
    resumed = json.loads((out / RUN_FILE).read_text(encoding="utf-8"))
    assert resumed["run_id"] != reference.run_id
    assert (resumed["best_f1"], resumed["best_epoch"]) == (reference.best_f1, reference.best_epoch)
    assert _metric_histories(resumed["run_id"]) == _metric_histories(reference.run_id)
    assert _tags(resumed["run_id"]) == _tags(reference.run_id)
    # The same weights and the same ONNX export.
    for path in ("encoder/model.safetensors", "head.safetensors", "model.onnx"):
        key = f"{out.relative_to(cli_project.root)}/model/{path}"
        assert after[key] == before[key], path
    resumed_history = json.loads((out / "history.json").read_text(encoding="utf-8"))
    strip = [{k: v for k, v in h.items() if k not in TIMINGS} for h in resumed_history]
    assert strip == [{k: v for k, v in h.items() if k not in TIMINGS} for h in history]


def test_registration_killed_between_mlflow_and_the_alias_file_then_rerun(
    cli_project: CliProject,
) -> None:
    params = cli_project.params
    stages.evaluate(params, "es", "bert_crf")
    # The first alias-file write of this registration records the champion after MLflow set the
    # alias (an entry it replaces is dropped before): killed just before it, the file has no
    # entry (readers ask MLflow), and the next registration writes every entry again.
    cli_project.killed("register", "--lang", "es", mode="replace", match="aliases.json", at=1)
    state = registry_state(params)
    assert not registry_problems(state), registry_problems(state)
    assert state["aliases"] == {CHAMPION: "1"} and state["file"] == {}
    cli_project.ok("register", "--lang", "es")
    state = registry_state(params)
    assert not registry_problems(state), registry_problems(state)
    # The same model again is not better: it may not take the champion alias.
    assert state["aliases"] == {CHAMPION: "1", CHALLENGER: "2"} == state["file"]
    assert not problems(cli_project.root)


def test_batch_prediction_killed_mid_file_resumes_its_chunks(
    cli_project: CliProject, tmp_path: Path
) -> None:
    params = cli_project.params
    model = run_dir(params, "es", "bert_crf") / "model"
    source = read_conll(split_file(params, "es", "train"))
    write_conll(cli_project.root / "input.conll", source)
    expected = tmp_path / "expected.conll"
    serve.predict_file(
        serve.load_model(str(model), params), cli_project.root / "input.conll", expected, 8
    )
    args = ("predict-batch", "-i", "input.conll", "-o", "out/sub.conll", "--model", str(model))
    args += ("--chunk-size", "8")
    # Opens: the parts' stamp, then chunk 0, chunk 1, ...: killed as chunk 2 is created.
    before, killed, after, stdout = kill_and_rerun(cli_project, args, "open", "sub.conll", 4)
    assert "out/sub.conll" not in killed
    assert sorted(p for p in killed if p.startswith("out/sub.conll.parts/chunk-")) == [
        f"out/sub.conll.parts/chunk-00000{i}.conll" for i in range(2)
    ]
    assert (cli_project.root / "out" / "sub.conll").read_bytes() == expected.read_bytes()
    assert not (cli_project.root / "out" / "sub.conll.parts").exists()
    assert '"reused_chunks": 2' in stdout
