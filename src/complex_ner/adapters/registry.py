"""The MLflow model registry: versions, the champion/challenger aliases, model folders.

One registered model per language (``complex-ner-<lang>``), aliases ``champion`` and
``challenger`` (no deprecated stages). Only MLflow's public client API is used; the decision
of which alias a new version gets is :func:`alias_for`, composed with re-scoring in the
application layer.

Every alias this project sets (:func:`set_alias`) is also written to an alias file beside the
store (``mlruns/aliases.json``, beside the SQLite file: registry URI, then name -> alias ->
version and local tagger folder), so that ``complex-ner predict`` resolves
``models:/name@alias`` without importing MLflow (about 2.5 s of its cold start). The file is
used only for the same registry URI and an existing folder; anything else, and an alias set
outside this project, goes through MLflow.

A registry on a tracking server (``MLFLOW_TRACKING_URI=http://...``) is shared: anyone may move
an alias there, so no alias file is written or read for it, and every alias is resolved by the
server. A version's files never change, so each one is downloaded once, into
``mlruns/downloads/<server>/<name>/<version>`` (atomically: a temporary folder, then a rename).

Registrations are serialised by a file lock beside the store (:func:`lock`): two processes
registering at once decide one after the other, so exactly one champion comes out. A changed
alias is first dropped from the alias file, then moved in MLflow, then written back: a process
killed in between leaves the file without the entry (readers fall back to MLflow), never with a
stale one. :func:`snapshot` and :func:`restore` undo a registration that failed half-way.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlparse

import yaml

from complex_ner.adapters.tracking import setup, tracking_uri
from complex_ner.core.config import Params
from complex_ner.core.io import atomic_write_bytes, atomic_write_text
from complex_ner.core.paths import CHALLENGER, CHAMPION, TAGGER_ARTIFACT, registered_name
from complex_ner.core.secrets import redact, redact_mapping

_MODEL_URI = re.compile(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))")
ALIAS_FILE = "aliases.json"
DOWNLOADS_DIR = "downloads"
LOCK_FILE = ".registry.lock"
#: Seconds a registration waits for another one to finish (its champion re-scoring included).
LOCK_TIMEOUT = 1800.0


@dataclass(frozen=True)
class Registration:
    """The outcome of registering one language's best BERT+CRF run; both scores are macro-F1
    on the reported (heldout) split."""

    lang: str
    version: str
    alias: str
    heldout_macro_f1: float
    champion_f1: float | None
    run_id: str


@dataclass(frozen=True)
class RunSummary:
    """What the registry needs to know about a training run."""

    run_id: str
    tags: dict[str, str]
    metrics: dict[str, float]
    model_uri: str | None


def alias_for(candidate_f1: float, champion_f1: float | None) -> str:
    """The champion/challenger rule: a new version must strictly beat the champion's score on
    the same data to take the ``champion`` alias; the first version always does."""
    return CHAMPION if champion_f1 is None or candidate_f1 > champion_f1 else CHALLENGER


def run_summary(params: Params, run_id: str) -> RunSummary:
    """Tags, metrics and the logged pyfunc model of one run."""
    import mlflow

    setup(params)
    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    models = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run_id}'",
        output_format="list",
    )
    uri = f"models:/{models[0].model_id}" if models else None
    return RunSummary(run_id, dict(run.data.tags), dict(run.data.metrics), uri)


def register_version(params: Params, lang: str, model_uri: str, tags: dict[str, str]) -> str:
    """A new version of ``complex-ner-<lang>`` (the registered model is created if needed)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    setup(params)
    client = mlflow.MlflowClient()
    name = registered_name(lang)
    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(
                name, description=f"complex-ner {lang}: best BERT+CRF on MultiCoNER"
            )
        except MlflowException:
            client.get_registered_model(name)  # created meanwhile by a process without the lock
    return str(mlflow.register_model(model_uri, name, tags=redact_mapping(tags)).version)


@contextmanager
def lock(params: Params) -> Iterator[None]:
    """Hold the registry's file lock (``<store>/.registry.lock``, :func:`store_dir`) inside the
    block.

    An OS lock (``flock``): a killed holder releases it. It serialises the processes of one
    machine that share the SQLite store (or, with a tracking server, the project folder).

    Raises:
        TimeoutError: another registration held it for :data:`LOCK_TIMEOUT` seconds.
    """
    from filelock import FileLock, Timeout

    path = store_dir(params) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(path), timeout=LOCK_TIMEOUT):
            yield
    except Timeout:
        raise TimeoutError(
            f"{path}: another registration held the registry lock for {LOCK_TIMEOUT:.0f} s"
        ) from None


@dataclass(frozen=True)
class Snapshot:
    """One registered model's versions and aliases, and the alias file, at one moment."""

    lang: str
    name: str
    versions: frozenset[str]
    aliases: dict[str, str]
    alias_file: bytes | None


def snapshot(params: Params, lang: str) -> Snapshot:
    """What :func:`restore` puts back."""
    import mlflow
    from mlflow.exceptions import MlflowException

    setup(params)
    client = mlflow.MlflowClient()
    name = registered_name(lang)
    try:
        aliases = {a: str(v) for a, v in client.get_registered_model(name).aliases.items()}
        versions = frozenset(str(v.version) for v in client.search_model_versions(f"name='{name}'"))
    except MlflowException:
        aliases, versions = {}, frozenset()
    path = alias_file(params)
    return Snapshot(lang, name, versions, aliases, path.read_bytes() if path.is_file() else None)


def restore(params: Params, before: Snapshot) -> None:
    """Undo what happened to the registered model since ``before``: versions registered since
    are deleted, the aliases point where they pointed, the alias file is as it was."""
    import mlflow

    setup(params)
    client = mlflow.MlflowClient()
    now = snapshot(params, before.lang)
    for alias in set(now.aliases) - set(before.aliases):
        client.delete_registered_model_alias(before.name, alias)
    for version in sorted(now.versions - before.versions, key=int):
        client.delete_model_version(before.name, version)
    for alias, version in before.aliases.items():
        if now.aliases.get(alias) != version:
            client.set_registered_model_alias(before.name, alias, version)
    path = alias_file(params)
    if before.alias_file is None:
        path.unlink(missing_ok=True)
    elif not path.is_file() or path.read_bytes() != before.alias_file:
        atomic_write_bytes(path, before.alias_file)


def version_by_alias(params: Params, lang: str, alias: str) -> tuple[str, dict[str, str]] | None:
    """``(version, tags)`` holding ``alias``, or None."""
    import mlflow
    from mlflow.exceptions import MlflowException

    setup(params)
    try:
        mv = mlflow.MlflowClient().get_model_version_by_alias(registered_name(lang), alias)
    except MlflowException:
        return None
    return str(mv.version), dict(mv.tags)


def set_alias(params: Params, lang: str, alias: str, version: str) -> None:
    """Point ``alias`` at ``version``, and record the model's aliases in the alias file.

    The file's entries of the model are rewritten from MLflow, so this also repairs an entry an
    earlier, killed registration left out.
    """
    import mlflow

    setup(params)
    name = registered_name(lang)
    client = mlflow.MlflowClient()
    if is_remote(tracking_uri(params)):
        client.set_registered_model_alias(name, alias, version)  # the server resolves it
        return
    resolve_tagger_dir(f"models:/{name}/{version}", params)  # fails before anything changed
    # Drop the entry first: killed after the MLflow change, the file holds no stale answer.
    _write_alias_entries(params, name, drop=alias)
    client.set_registered_model_alias(name, alias, version)
    entries = {
        a: {
            "version": str(v),
            "tagger_dir": str(resolve_tagger_dir(f"models:/{name}/{v}", params).resolve()),
        }
        for a, v in client.get_registered_model(name).aliases.items()
    }
    _write_alias_entries(params, name, entries=entries)


def _write_alias_entries(
    params: Params,
    name: str,
    *,
    entries: dict[str, dict[str, str]] | None = None,
    drop: str | None = None,
) -> None:
    """Replace the alias file's entries of ``name`` by ``entries``, or drop its ``drop`` entry;
    atomically."""
    path = alias_file(params)
    index: dict[str, Any] = {}
    if path.is_file():
        index = json.loads(path.read_text(encoding="utf-8"))
    if index.get("registry_uri") != _registry_key(params):
        index = {"registry_uri": _registry_key(params), "models": {}}
    models = index["models"]
    if entries is not None:
        models[name] = entries
    elif drop is not None and drop in models.get(name, {}):
        del models[name][drop]
    else:
        return
    atomic_write_text(path, json.dumps(index, indent=2) + "\n")


def store_dir(params: Params) -> Path:
    """The folder of the registry's SQLite file (by default ``<project>/mlruns``), where the
    alias file and the lock live, so that projects sharing one store share them too; for a
    store elsewhere (a tracking server), the project's ``mlruns``."""
    uri = tracking_uri(params)
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).parent
    return params.root / "mlruns"


def is_remote(uri: str) -> bool:
    """Whether a tracking/registry URI is a server (shared: aliases may move at any time)."""
    return urlparse(uri).scheme in {"http", "https", "databricks"}


def _registry_key(params: Params) -> str:
    """The registry URI as the alias file records it: its password masked (the file is read
    without MLflow, and may be shared)."""
    return redact(tracking_uri(params))


def alias_file(params: Params) -> Path:
    """Where :func:`set_alias` records the aliases it set: ``<store>/aliases.json``."""
    return store_dir(params) / ALIAS_FILE


def _recorded_alias(params: Params, name: str, alias: str) -> Path | None:
    """The tagger folder the alias file records for ``name@alias``, if it can be used."""
    path = alias_file(params)
    if is_remote(tracking_uri(params)) or not path.is_file():
        return None
    index = json.loads(path.read_text(encoding="utf-8"))
    if index.get("registry_uri") != _registry_key(params):
        return None
    entry = index.get("models", {}).get(name, {}).get(alias)
    folder = Path(entry["tagger_dir"]) if entry else None
    return folder if folder is not None and folder.is_dir() else None


def resolve_tagger_dir(uri: str, params: Params) -> Path:
    """The local tagger folder behind ``models:/name@alias``, ``models:/name/3`` or ``runs:/``.

    An alias this project set in a local registry is read from the alias file (same registry
    URI, folder present) without importing MLflow; otherwise MLflow's client resolves it. A
    version stored in a local artifact store is used in place; others are downloaded once
    (:func:`download_dir`).

    Raises:
        LookupError: the registered model, version, alias or run does not exist.
    """
    match = _MODEL_URI.fullmatch(uri)
    if match is not None and match.group(2) is not None:
        recorded = _recorded_alias(params, match.group(1), match.group(2))
        if recorded is not None:
            return recorded
    import mlflow
    from mlflow.exceptions import MlflowException

    setup(params)
    try:
        if match is not None:
            client = mlflow.MlflowClient()
            name, alias, version = match.groups()
            if alias is not None:
                version = client.get_model_version_by_alias(name, alias).version
            location = client.get_model_version_download_uri(name, version)
            local = _local_path(location)
            if local is None:
                local = _download_once(location, download_dir(params, name, str(version)))
        else:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except (MlflowException, OSError) as exc:
        raise LookupError(f"{uri}: no such registered model, alias or version ({exc})") from None
    folder = tagger_folder(local)
    if folder is None:
        raise LookupError(f"{uri}: not a complex-ner model (no {TAGGER_ARTIFACT!r} artifact)")
    return folder


def download_dir(params: Params, name: str, version: str) -> Path:
    """Where a version from a remote registry is kept: ``mlruns/downloads/<server>/name/version``
    (the server's URI made a folder name, so two servers' version 1 never meet)."""
    server = quote(_registry_key(params), safe="")  # no password in a folder name
    return params.root / "mlruns" / DOWNLOADS_DIR / server / name / version


def _download_once(location: str, target: Path) -> Path:
    """The artifacts at ``location`` in ``target``, downloaded unless already there."""
    import mlflow

    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        got = mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(partial))
        try:
            Path(got).rename(target)
        except OSError:
            if not target.is_dir():  # another process finished the same download first
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def _local_path(location: str) -> Path | None:
    parsed = urlparse(location)
    if parsed.scheme == "file" or (not parsed.scheme and location.startswith("/")):
        path = Path(unquote(parsed.path))
        return path if path.is_dir() else None
    return None


def tagger_folder(model_dir: Path) -> Path | None:
    """The tagger folder inside a pyfunc model folder, as its MLmodel file records it."""
    mlmodel = model_dir / "MLmodel"
    if not mlmodel.is_file():
        return None
    meta: dict[str, Any] = yaml.safe_load(mlmodel.read_text(encoding="utf-8")) or {}
    pyfunc = meta.get("flavors", {}).get("python_function", {})
    entry = (pyfunc.get("artifacts") or {}).get(TAGGER_ARTIFACT)
    if not entry or not (model_dir / entry["path"]).is_dir():
        return None
    return model_dir / entry["path"]
