"""The long reliability runs (``make reliability``, marker ``reliability_long``; not in
``make test``): every kill point of the data stages and batch prediction, a seeded sample of
the kill points of training and registration, training killed at seeded random moments and
resumed, and 20 rounds of two registrations raced, with the heldout data changed on the way.

The kill points of a command are counted by a clean run under ``faultrun.py`` (its renames and
its files opened for writing, under the paths it owns); each one is then a run killed there,
checked (nothing half-written visible, every output the old or the new one), and rerun.
"""

from __future__ import annotations

import json
import random
import signal
import time
from collections.abc import Callable, Iterator

import pytest

from complex_ner.app import stages
from complex_ner.core.paths import CHALLENGER, CHAMPION, RUN_FILE, run_dir, split_file
from complex_ner.domain.data import Sentence, read_conll, write_conll
from tests.integration.reliability import (
    TIMINGS,
    CliProject,
    Race,
    add_source_sentence,
    assert_old_or_new,
    champion_run,
    problems,
    registry_problems,
    registry_state,
    snapshot,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.reliability_long]

#: Seeds of the sampled kill points and random kill moments (the figures in docs/reliability.md).
SEED = 15
TRAIN_KILL_POINTS = 8
RANDOM_KILLS = 5
RACE_ROUNDS = 20
#: The files of a saved model that hold its weights (the JSON records hold timings too).
WEIGHTS = ("model/encoder/model.safetensors", "model/head.safetensors", "model/model.onnx")


def every_kill(project: CliProject, args: tuple[str, ...], match: str, sample: int = 0) -> int:
    """Kill ``complex-ner <args>`` at each of its kill points (or a seeded ``sample`` of them);
    after each: checked, rerun, checked. Returns the number of kills."""
    counts = project.count_points(*args, match=match)
    points = [(mode, n) for mode in ("replace", "open") for n in range(1, counts[mode] + 1)]
    if sample and len(points) > sample:
        points = sorted(random.Random(SEED).sample(points, sample))
    for mode, n in points:
        before = snapshot(project.root)
        project.killed(*args, mode=mode, match=match, at=n)
        killed = snapshot(project.root)
        assert not problems(project.root), (mode, n, problems(project.root))
        project.ok(*args)
        after = snapshot(project.root)
        assert not problems(project.root), (mode, n)
        exact = [p for p in killed if not p.startswith(("models/", "reports/", "out/"))]
        assert_old_or_new(before, {p: killed[p] for p in exact}, after)
        state = registry_state(project.params)
        assert not registry_problems(state), (mode, n, registry_problems(state))
    return len(points)


@pytest.fixture(scope="module")
def kills() -> Iterator[dict[str, int]]:
    """Kills survived per command, printed at the end (``pytest -s``) for the docs."""
    survived: dict[str, int] = {}
    yield survived
    print("\nkills survived:", json.dumps(survived))


def test_every_kill_point_of_ingest_and_split(
    cli_project: CliProject, kills: dict[str, int]
) -> None:
    stages.ingest(cli_project.params)
    add_source_sentence(cli_project)
    kills["ingest"] = every_kill(cli_project, ("ingest",), "/data/")
    stages.validate(cli_project.params)
    kills["split"] = every_kill(cli_project, ("split",), "/processed/")


def test_sampled_kill_points_of_training(cli_project: CliProject, kills: dict[str, int]) -> None:
    stages.train(cli_project.params, "es", "bert_crf", log=None)  # an old model to keep
    kills["train"] = every_kill(
        cli_project, ("train", "--lang", "es"), "/models/", sample=TRAIN_KILL_POINTS
    )
    kills["train --resume"] = every_kill(
        cli_project, ("train", "--lang", "es", "--resume"), "/checkpoint", sample=4
    )


def test_training_killed_at_random_moments_resumes_to_the_same_model(
    cli_project: CliProject, kills: dict[str, int]
) -> None:
    params = cli_project.params
    out = run_dir(params, "es", "bert_crf")
    cli_project.ok("train", "--lang", "es")
    reference = json.loads((out / "history.json").read_text(encoding="utf-8"))
    model = snapshot(out)
    rng = random.Random(SEED)
    landed = []
    for _ in range(RANDOM_KILLS):
        proc = cli_project.start("train", "--lang", "es")
        state = out / "checkpoint" / "state.json"
        while not state.is_file() and proc.poll() is None:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 2.0))  # somewhere in epochs 2-3, or in the export
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        landed.append(json.loads(state.read_text())["epoch"] if state.is_file() else None)
        assert not problems(cli_project.root)
        cli_project.ok("train", "--lang", "es", "--resume")
        history = json.loads((out / "history.json").read_text(encoding="utf-8"))
        assert [{k: v for k, v in h.items() if k not in TIMINGS} for h in history] == [
            {k: v for k, v in h.items() if k not in TIMINGS} for h in reference
        ]
        now = snapshot(out)
        assert all(now[p] == model[p] for p in WEIGHTS), "other weights after the resume"
        assert (out / RUN_FILE).is_file()
    kills["train at random moments"] = RANDOM_KILLS
    print("\ncheckpointed epoch when killed:", landed)


def test_sampled_kill_points_of_registration_and_batch_prediction(
    cli_project: CliProject, kills: dict[str, int]
) -> None:
    params = cli_project.params
    stages.evaluate(params, "es", "bert_crf")
    kills["register"] = every_kill(cli_project, ("register", "--lang", "es"), "/mlruns/")
    kills["register (record)"] = every_kill(cli_project, ("register", "--lang", "es"), "/reports/")
    state = registry_state(params)
    assert state["aliases"][CHAMPION] == "1" and set(state["aliases"]) == {CHAMPION, CHALLENGER}
    model = run_dir(params, "es", "bert_crf") / "model"
    write_conll(cli_project.root / "input.conll", read_conll(split_file(params, "es", "train")))
    args = ("predict-batch", "-i", "input.conll", "-o", "out/sub.conll", "--model", str(model))
    kills["predict-batch"] = every_kill(cli_project, (*args, "--chunk-size", "8"), "sub.conll")


def test_twenty_registration_races_with_heldout_changes(
    race: Race,
    monkeypatch: pytest.MonkeyPatch,
    toy_corpus: Callable[[int], list[Sentence]],
    kills: dict[str, int],
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", race.store)
    champions = []
    harder = [
        Sentence(id=f"h{i}", tokens=("vive", "en", "lima"), tags=("O", "O", "B-PER"))
        for i in range(4)
    ]
    for i in range(RACE_ROUNDS):
        if i == RACE_ROUNDS // 2:
            # New heldout sentences: every score is re-measured on them before a decision.
            race.heldout([*toy_corpus(24)[8:14], *harder])
        state = race.round()
        assert not registry_problems(state), (i, registry_problems(state))
        assert len(state["versions"]) == 2 * (i + 1)
        assert state["file"] == state["aliases"]
        champions.append(state["aliases"][CHAMPION])
        scores = race.scores()
        better = "good" if scores["good"] > scores["bad"] else "bad"
        assert champion_run(race, state) == better, (i, scores)
    # The champion moved at most once, in round one (when the worse model registered first):
    # never to an equal model, also not when the heldout data changed.
    assert len(set(champions[1:])) == 1, champions
    kills["registration races"] = RACE_ROUNDS
