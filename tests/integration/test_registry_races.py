"""Registry races: two ``complex-ner register`` processes at the same time.

Two project folders share one MLflow store (``MLFLOW_TRACKING_URI``), as two pipelines of one
team do: project ``good`` trained a model that scores on the heldout split, project ``bad`` one
that scores nothing. Each round starts both registrations at once; afterwards exactly one
champion, the better model, holds the alias, every version carries its tags, the alias file
agrees with MLflow, and the champion never moved to an equal or worse model, also after the
heldout data changed between rounds. One round here; 20 rounds in ``test_reliability_long.py``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from complex_ner.app import stages
from complex_ner.core.paths import CHAMPION, best_model_dir
from complex_ner.domain.data import Sentence, write_conll
from tests.integration.reliability import (
    CliProject,
    registry_problems,
    registry_state,
    toy_project,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass
class Race:
    """The two projects, their shared store, and the runs' heldout scores."""

    good: CliProject
    bad: CliProject
    store: str

    def heldout(self, sentences: list[Sentence]) -> None:
        """Give both projects the same new heldout split."""
        for project in (self.good, self.bad):
            write_conll(project.root / "data" / "processed" / "es" / "heldout.conll", sentences)

    def scores(self) -> dict[str, float]:
        """Both saved models' macro-F1 on the current heldout split."""
        return {
            name: stages.heldout_f1(
                project.params, "es", str(best_model_dir(project.params, "es", "bert_crf"))
            )
            for name, project in (("good", self.good), ("bad", self.bad))
        }

    def round(self) -> dict[str, object]:
        """Both registrations at once; the registry state after them."""
        procs = [p.start("register", "--lang", "es") for p in (self.good, self.bad)]
        codes = [proc.wait(timeout=600) for proc in procs]
        assert codes == [0, 0], [proc.log_path.read_text() for proc in procs]
        return registry_state(self.good.params)


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


@pytest.fixture
def shared_store(race: Race, monkeypatch: pytest.MonkeyPatch) -> Race:
    """The race, with this test process pointed at the shared store too."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", race.store)
    return race


def champion_run(race: Race, state: dict) -> str:
    """Which project's model the champion is."""
    import mlflow

    version = mlflow.MlflowClient().get_model_version("complex-ner-es", state["aliases"][CHAMPION])
    runs = {
        stages.recorded_run_id(p.params, "es", "bert_crf"): name
        for name, p in (("good", race.good), ("bad", race.bad))
    }
    return runs[version.run_id]


def test_two_registrations_at_once_make_the_better_model_champion(shared_store: Race) -> None:
    race = shared_store
    state = race.round()
    assert not registry_problems(state), registry_problems(state)
    assert sorted(state["versions"]) == ["1", "2"]
    assert champion_run(race, state) == "good"
    # Good first: bad becomes challenger. Bad first: good takes the champion alias from it.
    assert state["aliases"].get("challenger") in (
        None,
        *set(state["versions"]) - {state["aliases"][CHAMPION]},
    )
    assert state["file"] == state["aliases"]
    assert os.path.isfile(Path(race.store.removeprefix("sqlite:///")).parent / ".registry.lock")
