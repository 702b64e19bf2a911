"""A registry on a tracking server: no alias file, one download folder per server and version,
written atomically (the server itself: tests/integration/test_mlflow_server.py)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from complex_ner.adapters import registry
from complex_ner.core.config import Params


@pytest.fixture
def project(tmp_path: Path) -> Params:
    (tmp_path / "params.yaml").write_text("{}\n")
    return Params.defaults(tmp_path)


@pytest.mark.parametrize(
    ("uri", "remote"),
    [
        ("http://127.0.0.1:5000", True),
        ("https://mlflow.internal", True),
        ("sqlite:////srv/mlruns/mlflow.db", False),
        ("file:///srv/mlruns", False),
        ("/srv/mlruns", False),
    ],
)
def test_which_registries_are_shared(uri: str, remote: bool) -> None:
    assert registry.is_remote(uri) is remote


def test_an_alias_file_is_never_trusted_for_a_server(
    project: Params, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "http://127.0.0.1:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    folder = tmp_path / "tagger"
    folder.mkdir()
    entry = {"version": "1", "tagger_dir": str(folder)}
    index = {"registry_uri": url, "models": {"complex-ner-es": {"champion": entry}}}
    path = registry.alias_file(project)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(index))
    assert registry._recorded_alias(project, "complex-ner-es", "champion") is None
    # The same file for a local store (kept beside its SQLite file) is used.
    local = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", local)
    index["registry_uri"] = local
    path = registry.alias_file(project)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(index))
    assert registry._recorded_alias(project, "complex-ner-es", "champion") == folder


def test_each_server_and_version_has_its_own_download_folder(
    project: Params, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://a.internal:5000")
    first = registry.download_dir(project, "complex-ner-es", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://b.internal:5000")
    other = registry.download_dir(project, "complex-ner-es", "1")
    assert first != other and first.parent.parent != other.parent.parent
    assert first.is_relative_to(project.root / "mlruns" / registry.DOWNLOADS_DIR)
    assert registry.download_dir(project, "complex-ner-es", "2") != other


def test_a_version_is_downloaded_once_and_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def download(artifact_uri: str, dst_path: str) -> str:
        calls.append(artifact_uri)
        got = Path(dst_path) / "artifacts"
        got.mkdir()
        (got / "MLmodel").write_text("flavors: {}\n")
        return str(got)

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", download)
    target = tmp_path / "downloads" / "complex-ner-es" / "3"
    assert registry._download_once("mlflow-artifacts:/1/m/artifacts", target) == target
    assert (target / "MLmodel").is_file()
    assert registry._download_once("mlflow-artifacts:/1/m/artifacts", target) == target
    assert calls == ["mlflow-artifacts:/1/m/artifacts"]
    assert [p.name for p in target.parent.iterdir()] == ["3"]  # no partial folder left


def test_a_failed_download_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def download(artifact_uri: str, dst_path: str) -> str:
        (Path(dst_path) / "half").write_text("x")
        raise OSError("connection reset")

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", download)
    target = tmp_path / "downloads" / "complex-ner-es" / "3"
    with pytest.raises(OSError, match="connection reset"):
        registry._download_once("mlflow-artifacts:/1/m/artifacts", target)
    assert list(target.parent.iterdir()) == []
