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
from pathlib import Path

import pytest

from complex_ner.core.paths import CHAMPION
from tests.integration.reliability import (
    Race,
    champion_run,
    registry_problems,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def shared_store(race: Race, monkeypatch: pytest.MonkeyPatch) -> Race:
    """The race, with this test process pointed at the shared store too."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", race.store)
    return race


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
