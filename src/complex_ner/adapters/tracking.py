"""All MLflow access: runs, per-epoch metrics, artifacts, pyfunc models and the registry.

Default store: ``sqlite:///<project>/mlruns/mlflow.db`` with artifacts under ``mlruns/artifacts``;
``MLFLOW_TRACKING_URI`` switches to a remote server. One parent run per pipeline, one nested run
per language x architecture. The registry holds ``complex-ner-<lang>``; aliases ``champion`` and
``challenger`` (no deprecated stages).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from complex_ner.core.config import Params
from complex_ner.core.paths import CHALLENGER, CHAMPION, REGISTERED_ARCH, RUN_FILE, registered_name

EXPERIMENT = "complex-ner"
PARENT_ENV = "COMPLEX_NER_PARENT_RUN_ID"


def tracking_uri(params: Params) -> str:
    """``$MLFLOW_TRACKING_URI`` or the project's SQLite store (always absolute)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(params.root / 'mlruns' / 'mlflow.db').resolve()}"


def setup(params: Params) -> str:
    """Point MLflow at the store and make sure the experiment exists; returns its id."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    uri = tracking_uri(params)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    exp = mlflow.get_experiment_by_name(EXPERIMENT)
    if exp is not None:
        mlflow.set_experiment(EXPERIMENT)
        return exp.experiment_id
    location = None
    if uri.startswith("sqlite:"):
        location = (params.root / "mlruns" / "artifacts").resolve().as_uri()
    exp_id = mlflow.create_experiment(EXPERIMENT, artifact_location=location)
    mlflow.set_experiment(EXPERIMENT)
    return exp_id


def run_link(params: Params, run_id: str) -> str:
    """A browser link to a run: the tracking server, or ``mlflow ui``'s default address."""
    import mlflow

    uri = tracking_uri(params)
    base = uri.rstrip("/") if uri.startswith("http") else "http://127.0.0.1:5000"
    setup(params)
    exp_id = mlflow.MlflowClient().get_run(run_id).info.experiment_id
    return f"{base}/#/experiments/{exp_id}/runs/{run_id}"


def git_commit(root: Path) -> str:
    """The checkout's commit (with ``-dirty`` when it has changes), or ``unknown``."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def file_hash(*paths: Path) -> str:
    """Short sha256 over files (in order); identifies a data version."""
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def data_version(params: Params) -> str:
    """DVC's hash of ``data/raw`` from dvc.lock when present, else a hash of the raw files."""
    lock = params.root / "dvc.lock"
    if lock.is_file():
        import yaml

        stages = (yaml.safe_load(lock.read_text(encoding="utf-8")) or {}).get("stages", {})
        for out in stages.get("ingest", {}).get("outs", []):
            if out.get("path") == params.data.raw_dir:
                return f"dvc:{out.get('md5')}"
    raw = params.path(params.data.raw_dir)
    files = sorted(raw.rglob("*.conll")) if raw.is_dir() else []
    return f"sha256:{file_hash(*files)}" if files else "unknown"


def val_data_hash(params: Params, lang: str) -> str:
    """Identifies the validation sentences a score was measured on."""
    return file_hash(params.path(params.split.processed_dir) / lang / "val.conll")


def flat_params(params: Params) -> dict[str, str]:
    """Every param as ``section.key`` -> string (MLflow params are strings)."""
    out = {}
    for section in ("data", "split", "model", "train"):
        for k, v in asdict(getattr(params, section)).items():
            out[f"{section}.{k}"] = json.dumps(v) if isinstance(v, list | tuple) else str(v)
    return out


@contextmanager
def pipeline_run(params: Params, name: str = "pipeline") -> Iterator[str]:
    """A parent run; nested runs started inside find it through ``$COMPLEX_NER_PARENT_RUN_ID``.

    The parent is managed through the client, not made the thread's active run, so that the
    tasks (in this thread or a worker's) start their own runs freely.
    """
    import mlflow
    from mlflow.entities import Param

    exp_id = setup(params)
    client = mlflow.MlflowClient()
    run = client.create_run(
        exp_id,
        run_name=name,
        tags={
            "git_commit": git_commit(params.root),
            "data_version": data_version(params),
            "kind": "pipeline",
        },
    )
    run_id = run.info.run_id
    # One batch instead of a store round trip per param (~80 of them: seconds on SQLite).
    client.log_batch(run_id, params=[Param(k, v) for k, v in flat_params(params).items()])
    previous = os.environ.get(PARENT_ENV)
    os.environ[PARENT_ENV] = run_id
    status = "FAILED"
    try:
        yield run_id
        status = "FINISHED"
    finally:
        client.set_terminated(run_id, status=status)
        if previous is None:
            os.environ.pop(PARENT_ENV, None)
        else:
            os.environ[PARENT_ENV] = previous


def _run_file(params: Params, lang: str, arch: str) -> Path:
    from complex_ner.core.paths import run_dir

    return run_dir(params, lang, arch) / RUN_FILE


def recorded_run_id(params: Params, lang: str, arch: str) -> str | None:
    """The MLflow run that trained the saved ``lang``/``arch`` model, if any."""
    path = _run_file(params, lang, arch)
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8")).get("run_id")


def plot_history(history: list[dict[str, Any]], path: Path) -> None:
    """Training curves: loss and validation macro/micro F1 per epoch."""
    from complex_ner.core.io import pyplot, save_png

    plt = pyplot()

    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    a.plot(epochs, [h["loss"] for h in history], marker="o")
    a.set_title("training loss")
    a.set_xlabel("epoch")
    b.plot(epochs, [h["val_macro_f1"] for h in history], marker="o", label="macro-F1")
    b.plot(epochs, [h["val_micro_f1"] for h in history], marker="s", label="micro-F1")
    b.set_title("validation")
    b.set_xlabel("epoch")
    b.legend()
    fig.tight_layout()
    save_png(fig, path)


@dataclass(frozen=True)
class TrainedRun:
    """What a tracked training produced."""

    lang: str
    arch: str
    run_id: str
    best_f1: float
    best_epoch: int
    model_dir: str


def train_tracked(
    params: Params, lang: str, arch: str, *, resume: bool = False, progress: bool = True
) -> TrainedRun:
    """Train one language x architecture inside an MLflow run (nested under the pipeline's)."""
    import mlflow
    from mlflow.entities import Metric

    from complex_ner.core.io import atomic_write_text
    from complex_ner.core.paths import HISTORY_FILE, run_dir
    from complex_ner.engines.train import train_model

    setup(params)
    parent = os.environ.get(PARENT_ENV)
    encoder = params.model.encoder
    if params.pretrain.enabled and lang in params.pretrain.languages:
        encoder = f"{params.pretrain.output_dir}/{lang} (WWM-adapted {encoder})"
    tags = {
        "lang": lang,
        "arch": arch,
        "encoder": encoder,
        "git_commit": git_commit(params.root),
        "data_version": data_version(params),
        "val_data_hash": val_data_hash(params, lang),
        "kind": "train",
    }
    if parent:
        tags["mlflow.parentRunId"] = parent
    client = mlflow.MlflowClient()
    with mlflow.start_run(run_name=f"{lang}-{arch}", tags=tags) as run:
        run_id = run.info.run_id
        mlflow.log_params({**flat_params(params), "model.arch": arch})

        def on_epoch(record: dict[str, Any]) -> None:
            step = int(record["epoch"])
            now = int(time.time() * 1000)
            metrics = [Metric(k, float(v), now, step) for k, v in record.items() if k != "epoch"]
            client.log_batch(run_id, metrics=metrics)

        result = train_model(
            params, lang, arch, resume=resume, on_epoch_end=on_epoch, progress=progress
        )
        out = run_dir(params, lang, arch)
        mlflow.log_metrics(
            {"best_val_macro_f1": result.best_f1, "best_epoch": float(result.best_epoch)}
        )
        if result.history:
            plot_history(result.history, out / "training_curves.png")
            mlflow.log_artifact(str(out / "training_curves.png"), "training")
            mlflow.log_artifact(str(out / HISTORY_FILE), "training")
        trained = TrainedRun(lang, arch, run_id, result.best_f1, result.best_epoch, str(out))
        atomic_write_text(out / RUN_FILE, json.dumps(asdict(trained), indent=2) + "\n")
    return trained


def log_evaluation(params: Params, lang: str, arch: str, scores: dict[str, Any]) -> str | None:
    """Attach evaluation reports and the pyfunc model to the run that trained the model."""
    import mlflow

    from complex_ner.core.paths import BEST_DIR, eval_dir, run_dir

    run_id = recorded_run_id(params, lang, arch)
    if run_id is None:
        return None
    setup(params)
    with mlflow.start_run(run_id=run_id):
        for split, s in scores.items():
            mlflow.log_metrics(
                {
                    f"eval_{split}_macro_f1": s["macro"]["f1"],
                    f"eval_{split}_micro_f1": s["micro"]["f1"],
                    **{f"eval_{split}_f1_{t}": v["f1"] for t, v in s["per_type"].items()},
                }
            )
        reports = eval_dir(params, lang, arch)
        if reports.is_dir():
            mlflow.log_artifacts(str(reports), "evaluation")
        log_pyfunc(run_dir(params, lang, arch) / BEST_DIR)
    return run_id


def log_pyfunc(tagger_dir: Path) -> Any:
    """Log a tagger folder as an ``mlflow.pyfunc`` model named ``model`` in the active run."""
    import mlflow
    import pandas as pd

    from complex_ner.adapters.serving import NerPyfunc, signature
    from complex_ner.core.paths import TAGGER_ARTIFACT

    package = Path(__file__).resolve().parents[1]
    example = pd.DataFrame({"text": ["el museo del prado está en madrid ."]})
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=NerPyfunc(),
        artifacts={TAGGER_ARTIFACT: str(tagger_dir)},
        code_paths=[str(package)],
        signature=signature(),
        input_example=example,
        pip_requirements=[
            "torch==2.13.0",
            "transformers==5.24.0",
            "pytorch-crf==0.7.2",
            "numba==0.68.1",  # optional at run time: CRF decoding falls back to torch without it
            "safetensors",
            "tokenizers",
            "pandas",
            "mlflow==3.17.2",
        ],
    )


def resolve_tagger_dir(uri: str, root: Path | None = None) -> Path:
    """The local tagger folder behind ``models:/name@alias``, ``models:/name/3`` or ``runs:/``.

    Artifacts in a local store are used in place; remote ones are downloaded once.

    Raises:
        LookupError: the registered model, version, alias or run does not exist.
    """
    base = root if root is not None else Path.cwd()
    fast = local_registry_folder(uri, base)
    if fast is not None:
        return fast

    import mlflow
    from mlflow.exceptions import MlflowException

    from complex_ner.core.config import load_params
    from complex_ner.core.paths import TAGGER_ARTIFACT

    params_file = base / "params.yaml"
    if params_file.is_file():
        setup(load_params(params_file))
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except (MlflowException, OSError) as exc:
        raise LookupError(f"{uri}: no such registered model, alias or version ({exc})") from None
    folder = _tagger_path(local)
    if folder is None:
        raise LookupError(f"{uri}: not a complex-ner model (no {TAGGER_ARTIFACT!r} artifact)")
    return folder


def local_registry_folder(uri: str, root: Path) -> Path | None:
    """The tagger folder of ``models:/name@alias`` or ``models:/name/N``, read straight from
    the project's own SQLite registry, or None whenever that is not certain.

    Importing mlflow and opening its store costs about 3 s, most of a prediction's cold start;
    for the default local store two read-only queries give the same answer. Any other store,
    schema surprise or missing file returns None, and the caller asks mlflow.
    """
    import re
    import sqlite3
    from urllib.parse import unquote, urlparse

    from complex_ner.core.config import ConfigError, load_params

    match = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))", uri)
    params_file = root / "params.yaml"
    if match is None or not params_file.is_file():
        return None
    try:
        store = tracking_uri(load_params(params_file))
    except (ConfigError, OSError, ValueError):
        return None
    db = Path(store.removeprefix("sqlite:///"))
    if not store.startswith("sqlite:///") or not db.is_file():
        return None
    name, alias, version = match.groups()
    try:
        with sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True) as conn:
            if alias is not None:
                row = conn.execute(
                    "SELECT version FROM registered_model_aliases WHERE name = ? AND alias = ?",
                    (name, alias),
                ).fetchone()
                if row is None:
                    return None
                version = str(row[0])
            row = conn.execute(
                "SELECT storage_location, status FROM model_versions "
                "WHERE name = ? AND version = ?",
                (name, int(version)),
            ).fetchone()
    except (sqlite3.Error, ValueError):
        return None
    if row is None or row[1] != "READY" or not str(row[0]).startswith("file://"):
        return None
    return _tagger_path(Path(unquote(urlparse(row[0]).path)))


def _tagger_path(model_dir: Path) -> Path | None:
    """The tagger folder inside a downloaded pyfunc model, as its MLmodel file records it."""
    import yaml

    from complex_ner.core.paths import TAGGER_ARTIFACT

    mlmodel = model_dir / "MLmodel"
    if not mlmodel.is_file():
        return None
    meta = yaml.safe_load(mlmodel.read_text(encoding="utf-8")) or {}
    pyfunc = meta.get("flavors", {}).get("python_function", {})
    entry = (pyfunc.get("artifacts") or {}).get(TAGGER_ARTIFACT)
    if not entry or not (model_dir / entry["path"]).is_dir():
        return None
    return model_dir / entry["path"]


def _run_model_uri(client: Any, run_id: str) -> str | None:
    """The URI of the pyfunc model logged by a run (MLflow 3 logged models)."""
    import mlflow

    run = client.get_run(run_id)
    models = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run_id}'",
        output_format="list",
    )
    if not models:
        return None
    return f"models:/{models[0].model_id}"


@dataclass(frozen=True)
class Registration:
    """The outcome of registering one language's best BERT+CRF run."""

    lang: str
    version: str
    alias: str
    val_macro_f1: float
    champion_f1: float | None
    run_id: str


def _champion_f1_on(params: Params, lang: str, version: Any, val_hash: str) -> float:
    """The champion's macro-F1 on the current validation data (re-scored if it changed)."""
    if version.tags.get("val_data_hash") == val_hash and "val_macro_f1" in version.tags:
        return float(version.tags["val_macro_f1"])
    from complex_ner.domain.data import read_conll
    from complex_ner.domain.models.tagger import Tagger
    from complex_ner.engines.train import evaluate_f1

    tagger = Tagger.load(resolve_tagger_dir(f"models:/{registered_name(lang)}/{version.version}"))
    val = read_conll(params.path(params.split.processed_dir) / lang / "val.conll")
    return float(evaluate_f1(tagger, val, params.data.entity_types, 64)["macro"]["f1"])


def register_best(params: Params, lang: str, run_ids: list[str] | None = None) -> Registration:
    """Register the best BERT+CRF run of ``lang``; alias ``champion`` only if it beats the
    current champion on the same validation data, otherwise ``challenger``.

    Args:
        run_ids: Candidate runs; by default the run that trained the saved bert_crf model.

    Raises:
        LookupError: no candidate run with a logged model.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    setup(params)
    client = mlflow.MlflowClient()
    if run_ids is None:
        rid = recorded_run_id(params, lang, REGISTERED_ARCH)
        run_ids = [rid] if rid else []
    candidates = []
    for rid in run_ids:
        run = client.get_run(rid)
        if run.data.tags.get("arch") != REGISTERED_ARCH or run.data.tags.get("lang") != lang:
            continue
        f1 = run.data.metrics.get("eval_val_macro_f1")
        uri = _run_model_uri(client, rid)
        if f1 is not None and uri is not None:
            candidates.append((f1, rid, uri, run))
    if not candidates:
        raise LookupError(
            f"no {REGISTERED_ARCH} run for {lang!r} with a logged model and eval_val_macro_f1; "
            "run train and evaluate first"
        )
    f1, rid, uri, run = max(candidates, key=lambda c: c[0])
    name = registered_name(lang)
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(
            name, description=f"complex-ner {lang}: best BERT+CRF on MultiCoNER validation"
        )
    val_hash = val_data_hash(params, lang)
    tags = {
        # Full precision: a rounded tag would make an equal model look better than the champion.
        "val_macro_f1": repr(float(f1)),
        "val_micro_f1": repr(float(run.data.metrics.get("eval_val_micro_f1", float("nan")))),
        "val_data_hash": val_hash,
        "data_version": run.data.tags.get("data_version", "unknown"),
        "encoder": run.data.tags.get("encoder", "unknown"),
        "arch": REGISTERED_ARCH,
        "lang": lang,
        "git_commit": run.data.tags.get("git_commit", "unknown"),
    }
    mv = mlflow.register_model(uri, name, tags=tags)
    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        current = None
    champion_f1 = None
    if current is not None and current.version != mv.version:
        champion_f1 = _champion_f1_on(params, lang, current, val_hash)
    alias = CHAMPION if champion_f1 is None or f1 > champion_f1 else CHALLENGER
    client.set_registered_model_alias(name, alias, mv.version)
    return Registration(lang, str(mv.version), alias, float(f1), champion_f1, rid)


def register_languages(params: Params, languages: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Register every language's best BERT+CRF run; record the outcome in ``register.output``.

    The DVC stage, the CLI and the Prefect flow all call this, so the file always exists
    after a registration.
    """
    from complex_ner.core.io import atomic_write_text

    out = {lang: asdict(register_best(params, lang)) for lang in languages}
    path = params.path(params.register.output)
    atomic_write_text(path, json.dumps(out, indent=2) + "\n")
    return out
