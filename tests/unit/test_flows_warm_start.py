"""``flows.pipeline.warm_start``: the temporary Prefect server starts in the background only when
no API is configured, and is up (or has failed) before the flow runs."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import flows.pipeline as pipeline
import pytest
from prefect.server.api.server import SubprocessASGIServer
from prefect.settings import PREFECT_API_URL, temporary_settings

from complex_ner.core.config import ConfigError


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    seen: dict[str, list[Any]] = {"start": [], "warm_up": []}

    def fake_start(self: Any, timeout: int | None = None) -> None:
        seen["start"].append(threading.current_thread() is not threading.main_thread())

    monkeypatch.setattr(SubprocessASGIServer, "start", fake_start)
    # The MLflow store and DVC imports are not under test here: record the call only.
    monkeypatch.setattr(pipeline.app, "warm_up", lambda path: seen["warm_up"].append(Path(path)))
    return seen


def test_starts_the_temporary_server_in_the_background(
    calls: dict[str, list[Any]], root: Path
) -> None:
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        pipeline.warm_start(str(root / "params.yaml"))
    assert calls["start"] == [True]  # once, from another thread, joined before returning
    assert calls["warm_up"] == [root / "params.yaml"]


def test_leaves_a_configured_server_alone(calls: dict[str, list[Any]], root: Path) -> None:
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        pipeline.warm_start(str(root / "params.yaml"))
    assert calls["start"] == []
    assert calls["warm_up"] == [root / "params.yaml"]


def test_a_failed_start_is_left_to_the_flow(
    monkeypatch: pytest.MonkeyPatch, calls: dict[str, list[Any]], root: Path
) -> None:
    def failing(self: Any, timeout: int | None = None) -> None:
        raise RuntimeError("Timed out while attempting to connect")

    monkeypatch.setattr(SubprocessASGIServer, "start", failing)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        pipeline.warm_start(str(root / "params.yaml"))  # no raise: the flow's client retries
    assert calls["warm_up"] == [root / "params.yaml"]


def test_a_bad_params_file_fails_before_any_server_starts(
    calls: dict[str, list[Any]], tmp_path: Path
) -> None:
    bad = tmp_path / "params.yaml"
    bad.write_text("train: {epochs: -1}\n", encoding="utf-8")
    with (
        temporary_settings(restore_defaults={PREFECT_API_URL}),
        pytest.raises(ConfigError, match="epochs"),
    ):
        pipeline.warm_start(str(bad))
    assert calls["start"] == [] and calls["warm_up"] == []
