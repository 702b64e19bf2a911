"""MLflow tracking: the store, runs, their params, metrics and artifacts, and the pyfunc model.

Only MLflow's public API is used. Default store: ``sqlite:///<project>/mlruns/mlflow.db`` with
artifacts under ``mlruns/artifacts``; ``MLFLOW_TRACKING_URI`` switches to a remote server. One
parent run per pipeline (``pipeline_run``); the runs started in stage subprocesses nest under it
through ``$COMPLEX_NER_PARENT_RUN_ID``. Nothing here trains or evaluates: the application layer
passes the callbacks returned here to the engines.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from complex_ner.core.config import Params
from complex_ner.core.io import pyplot, save_png
from complex_ner.core.paths import (
    EXPORT_FILE,
    TAGGER_ARTIFACT,
    VAL_SPLIT,
    split_file,
)
from complex_ner.core.secrets import redact, redact_mapping
from complex_ner.engines.onnx_tagger import copy_served_files

EXPERIMENT = "complex-ner"
PARENT_ENV = "COMPLEX_NER_PARENT_RUN_ID"
#: Tags the pipeline run carries when it ran as a DVC experiment (see app/pipeline.py).
EXPERIMENT_ENV = "COMPLEX_NER_DVC_EXPERIMENT"
PYFUNC_NAME = "model"

#: What a logged pyfunc model needs at serving time (MLflow records these in the model): the
#: ONNX export runs on onnxruntime; no torch, transformers or numba.
PYFUNC_REQUIREMENTS = (
    "onnxruntime==1.31.1",
    "tokenizers==0.23.3",
    "safetensors==0.8.0",
    "numpy==2.4.6",
    "pydantic==2.14.4",
    "pyyaml",
    "pandas",
    "mlflow==3.17.2",
)


#: Tag of every run: ``host:pid`` of its process (:func:`close_orphaned_runs`).
PROCESS_TAG = "process"


def tracking_uri(params: Params) -> str:
    """``$MLFLOW_TRACKING_URI`` or the project's SQLite store (always absolute)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(params.root / 'mlruns' / 'mlflow.db').resolve()}"


def setup(params: Params) -> str:
    """Point MLflow (tracking and registry) at the store, create the experiment; its id."""
    import mlflow

    uri = tracking_uri(params)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    exp = mlflow.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        location = None
        if uri.startswith("sqlite:"):
            location = (params.root / "mlruns" / "artifacts").resolve().as_uri()
        exp_id = mlflow.create_experiment(EXPERIMENT, artifact_location=location)
    else:
        exp_id = exp.experiment_id
    mlflow.set_experiment(EXPERIMENT)
    return exp_id


def run_link(params: Params, run_id: str) -> str:
    """A browser link to a run: the tracking server's (password masked), or the address
    ``mlflow ui --host 127.0.0.1`` serves on by default."""
    import mlflow

    uri = tracking_uri(params)
    base = uri.rstrip("/") if uri.startswith("http") else "http://127.0.0.1:5000"
    setup(params)
    exp_id = mlflow.MlflowClient().get_run(run_id).info.experiment_id
    return redact(f"{base}/#/experiments/{exp_id}/runs/{run_id}")


# --------------------------------------------------------------------------- lineage tags


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
        stages = (yaml.safe_load(lock.read_text(encoding="utf-8")) or {}).get("stages", {})
        for out in stages.get("ingest", {}).get("outs", []):
            if out.get("path") == params.data.raw_dir:
                return f"dvc:{out.get('md5')}"
    raw = params.path(params.data.raw_dir)
    files = sorted(raw.rglob("*.conll")) if raw.is_dir() else []
    return f"sha256:{file_hash(*files)}" if files else "unknown"


def eval_data_hash(params: Params, lang: str, split: str = VAL_SPLIT) -> str:
    """Identifies the sentences a score was measured on (the registry: ``REPORTED_SPLIT``)."""
    return file_hash(split_file(params, lang, split))


_METRIC_UNSAFE = re.compile(r"[^\w\-. /:]")


def metric_key(*parts: str) -> str:
    """A valid MLflow metric name from parts joined by ``_`` (``21+`` -> ``21plus``; any other
    character MLflow refuses becomes ``_``)."""
    return _METRIC_UNSAFE.sub("_", "_".join(parts).replace("+", "plus"))


def flat_params(params: Params) -> dict[str, str]:
    """Every param as ``section.key`` -> string (MLflow params are strings)."""
    out = {}
    for section, values in params.model_dump(exclude={"root"}).items():
        if not isinstance(values, Mapping):
            continue
        for k, v in values.items():
            out[f"{section}.{k}"] = json.dumps(v) if isinstance(v, list | tuple) else str(v)
    return out


def lineage_tags(params: Params, kind: str, **extra: str) -> dict[str, str]:
    """Tags every run carries: what code and data produced it, and under which experiment."""
    tags = {
        "kind": kind,
        "git_commit": git_commit(params.root),
        "data_version": data_version(params),
        PROCESS_TAG: this_process(),
        **extra,
    }
    experiment = os.environ.get(EXPERIMENT_ENV)
    if experiment:
        tags["dvc_experiment"] = experiment
    parent = os.environ.get(PARENT_ENV)
    if parent:
        tags["mlflow.parentRunId"] = parent
    return tags


# --------------------------------------------------------------------------- runs


def this_process() -> str:
    """``host:pid``: where a run's process lives, so a later run can tell that it died."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _gone(process: str) -> bool:
    """True when ``host:pid`` names a process of this host that no longer exists."""
    host, _, pid = process.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's (or an unknown) process: cannot be checked from here
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, someone else's
    return False


def close_orphaned_runs(exp_id: str) -> list[str]:
    """Mark ``KILLED`` the experiment's ``RUNNING`` runs whose process (the ``process`` tag)
    ran on this host and is gone: a SIGKILL, an OOM kill or a power loss never lets MLflow end
    the run. A reused pid keeps its run open, which errs on the safe side.

    Returns:
        The run ids closed.
    """
    import mlflow

    client = mlflow.MlflowClient()
    running = client.search_runs(
        [exp_id], filter_string="attributes.status = 'RUNNING'", max_results=1000
    )
    closed = []
    for run in running:
        if _gone(run.data.tags.get(PROCESS_TAG, "")):
            client.set_terminated(run.info.run_id, status="KILLED")
            closed.append(run.info.run_id)
    return closed


@contextmanager
def pipeline_run(
    params: Params, name: str = "pipeline", tags: Mapping[str, str] | None = None
) -> Iterator[str]:
    """A parent run; runs started inside (also in subprocesses) nest under it.

    The parent is managed through the client, not made the thread's active run, so that the
    stages (in this process or a subprocess) start their own runs freely.
    """
    import mlflow
    from mlflow.entities import Param

    exp_id = setup(params)
    close_orphaned_runs(exp_id)
    client = mlflow.MlflowClient()
    run_tags = {**lineage_tags(params, "pipeline"), **(tags or {})}
    run_tags.pop("mlflow.parentRunId", None)
    run = client.create_run(exp_id, run_name=name, tags=redact_mapping(run_tags))
    run_id = run.info.run_id
    # One batch instead of a store round trip per param (~80 of them: seconds on SQLite).
    logged = redact_mapping(flat_params(params))
    client.log_batch(run_id, params=[Param(k, v) for k, v in logged.items()])
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


class Run:
    """An active MLflow run: log metrics in batches, artifacts, and the pyfunc model."""

    def __init__(self, run_id: str) -> None:
        import mlflow

        self.run_id = run_id
        self._client = mlflow.MlflowClient()
        self._mlflow = mlflow

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """One store write for many metrics (SQLite costs a round trip per call)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        if batch:
            self._client.log_batch(self.run_id, metrics=batch)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Set tags on the run (one store write)."""
        from mlflow.entities import RunTag

        self._client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_steps(self, rows: Sequence[tuple[int, Mapping[str, float]]]) -> None:
        """Per-step metrics (``[(step, {name: value})]``) in one store write."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for step, values in rows for k, v in values.items()]
        if batch:
            self._client.log_batch(self.run_id, metrics=batch)

    def epoch_logger(self, skip: tuple[str, ...] = ("epoch",)) -> Callable[[dict[str, Any]], None]:
        """A callback for the engines: logs each epoch record, ``epoch`` as the step."""

        def log(record: dict[str, Any]) -> None:
            values = {k: v for k, v in record.items() if k not in skip and _is_number(v)}
            self.log_metrics(values, step=int(record["epoch"]))

        return log

    def log_artifact(self, path: Path, folder: str) -> None:
        """A file or a whole folder under ``folder`` in the run's artifacts."""
        if path.is_dir():
            self._mlflow.log_artifacts(str(path), folder)
        elif path.is_file():
            self._mlflow.log_artifact(str(path), folder)

    def log_pyfunc(self, tagger_dir: Path) -> Any:
        """Log a tagger folder's ONNX export as the run's ``mlflow.pyfunc`` model (``model``).

        The model is logged "from code": MLflow runs ``adapters/serving.py`` when it loads the
        model, so nothing is pickled and the class is found in the packaged source. Its artifact
        is the folder without the torch encoder (:data:`~complex_ner.core.paths.SERVED_FILES`).

        Raises:
            FileNotFoundError: the folder has no ONNX export.
        """
        import pandas as pd

        if not (tagger_dir / EXPORT_FILE).is_file():
            raise FileNotFoundError(
                f"{tagger_dir}: no ONNX export ({EXPORT_FILE}); "
                f"run `complex-ner export --model {tagger_dir}`"
            )
        package = Path(__file__).resolve().parents[1]
        with tempfile.TemporaryDirectory(prefix="served-") as tmp:
            served = Path(tmp) / tagger_dir.name
            copy_served_files(tagger_dir, served)
            return self._mlflow.pyfunc.log_model(
                name=PYFUNC_NAME,
                python_model=str(package / "adapters" / "serving.py"),
                artifacts={TAGGER_ARTIFACT: str(served)},
                code_paths=[str(package)],
                signature=_pyfunc_signature(),
                input_example=pd.DataFrame({"text": ["el museo del prado está en madrid ."]}),
                pip_requirements=list(PYFUNC_REQUIREMENTS),
            )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@contextmanager
def start_run(
    params: Params,
    name: str,
    tags: Mapping[str, str],
    run_id: str | None = None,
    log_params: Mapping[str, str] | None = None,
) -> Iterator[Run]:
    """A new run (nested under the pipeline's when there is one), or ``run_id`` resumed."""
    import mlflow

    exp_id = setup(params)
    if run_id is not None:
        with mlflow.start_run(run_id=run_id) as active:
            yield Run(active.info.run_id)
        return
    close_orphaned_runs(exp_id)
    with mlflow.start_run(run_name=name, tags=redact_mapping(tags)) as active:
        if log_params:
            mlflow.log_params(redact_mapping(log_params))
        yield Run(active.info.run_id)


def plot_history(history: list[dict[str, Any]], path: Path) -> None:
    """Training curves: loss and validation macro/micro F1 per epoch."""
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


def _pyfunc_signature() -> Any:
    """Input: optional ``text`` (string) or ``tokens`` (list of strings); output: entities."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import (
        Array,
        ColSpec,
        DataType,
        Object,
        ParamSchema,
        ParamSpec,
        Property,
        Schema,
    )

    entity = Object(
        [
            Property("text", DataType.string),
            Property("type", DataType.string),
            Property("start", DataType.long),
            Property("end", DataType.long),
            Property("token_start", DataType.long),
            Property("token_end", DataType.long),
            Property("confidence", DataType.double),
        ]
    )
    return ModelSignature(
        inputs=Schema(
            [
                ColSpec(DataType.string, "text", required=False),
                ColSpec(Array(DataType.string), "tokens", required=False),
            ]
        ),
        outputs=Schema([ColSpec(Array(entity), "entities")]),
        params=ParamSchema([ParamSpec("batch_size", DataType.long, 64)]),
    )
