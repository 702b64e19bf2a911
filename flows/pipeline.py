"""Prefect 3 flows: thin wrappers over ``complex_ner`` functions, no ML logic here.

``pipeline`` chains ``validate_data`` -> ``train`` (one task run per language x architecture)
-> ``evaluate`` -> ``register`` inside one MLflow parent run. Tasks that only move files retry;
training and evaluation do not (a failure there is not transient), but all have timeouts.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.task_runners import ThreadPoolTaskRunner

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT / "src", ROOT):  # deployments run from a checkout without installing
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from complex_ner.adapters import tracking  # noqa: E402
from complex_ner.core.config import Params, load_params  # noqa: E402

DEFAULT_PARAMS = str(ROOT / "params.yaml")


def _io_error_only(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a task only when it failed on I/O (not on bad data, which a retry cannot fix)."""
    from complex_ner.domain.data import DataFormatError

    exc = state.result(raise_on_failure=False)
    return isinstance(exc, OSError) and not isinstance(exc, DataFormatError)


IO = {"retries": 2, "retry_delay_seconds": 2, "retry_condition_fn": _io_error_only}


def _params(params_path: str, overrides: list[str] | None) -> Params:
    return load_params(params_path, overrides or [])


@task(name="ingest", timeout_seconds=600, **IO)
def ingest_task(params_path: str, overrides: list[str] | None = None) -> dict[str, Any]:
    from complex_ner.domain.data import ingest

    return ingest(_params(params_path, overrides))


@task(name="validate", timeout_seconds=900)
def validate_task(params_path: str, overrides: list[str] | None = None) -> dict[str, Any]:
    from complex_ner.domain.validation import ValidationFailed, validate_data

    try:
        report = validate_data(_params(params_path, overrides))
    except ValidationFailed as exc:
        get_run_logger().error("validation failed:\n%s", exc.summary)
        raise
    return {lang: r["success"] for lang, r in report["languages"].items()}


@task(name="split", timeout_seconds=600, **IO)
def split_task(params_path: str, overrides: list[str] | None = None) -> dict[str, Any]:
    from complex_ner.domain.data import write_splits
    from complex_ner.domain.validation import require_validated

    p = _params(params_path, overrides)
    require_validated(p)
    return write_splits(p)


@task(name="stats", timeout_seconds=600, **IO)
def stats_task(params_path: str, overrides: list[str] | None = None) -> dict[str, Any]:
    from complex_ner.domain.stats import write_stats

    return write_stats(_params(params_path, overrides))


@task(name="provision-encoder", timeout_seconds=900, **IO)
def provision_task(params_path: str, overrides: list[str] | None = None) -> str:
    from complex_ner.domain.encoders import provision_default_encoder

    p = _params(params_path, overrides)
    if p.model.encoder != p.encoder.output_dir:
        return p.model.encoder  # a user's encoder (hub name or folder): nothing to provision
    return str(provision_default_encoder(p.path(p.encoder.output_dir)))


@task(name="train", task_run_name="train-{lang}-{arch}", timeout_seconds=6 * 3600)
def train_task(
    params_path: str, lang: str, arch: str, overrides: list[str] | None = None
) -> dict[str, Any]:
    from dataclasses import asdict

    run = tracking.train_tracked(_params(params_path, overrides), lang, arch, progress=False)
    get_run_logger().info("%s %s: best val macro-F1 %.4f", lang, arch, run.best_f1)
    return asdict(run)


@task(name="evaluate", task_run_name="evaluate-{lang}-{arch}", timeout_seconds=3600)
def evaluate_task(
    params_path: str, lang: str, arch: str, overrides: list[str] | None = None
) -> dict[str, Any]:
    from complex_ner.engines.evaluate import evaluate_model

    p = _params(params_path, overrides)
    scores = evaluate_model(p, lang, arch)
    tracking.log_evaluation(p, lang, arch, scores)
    return {split: s["macro"]["f1"] for split, s in scores.items()}


@task(name="tables", timeout_seconds=300, **IO)
def tables_task(params_path: str, overrides: list[str] | None = None) -> dict[str, Any]:
    from complex_ner.engines.evaluate import write_tables

    p = _params(params_path, overrides)
    return write_tables(p, p.train.languages, p.train.archs)


@task(name="register", timeout_seconds=1800, **IO)
def register_task(params_path: str, overrides: list[str] | None = None) -> list[dict]:
    p = _params(params_path, overrides)
    out = tracking.register_languages(p, p.train.languages)
    for lang, reg in out.items():
        had = "none" if reg["champion_f1"] is None else f"{reg['champion_f1']:.4f}"
        get_run_logger().info(
            "%s: version %s -> %s (val macro-F1 %.4f, champion had %s)",
            tracking.registered_name(lang),
            reg["version"],
            reg["alias"],
            reg["val_macro_f1"],
            had,
        )
    return list(out.values())


@task(name="version-outputs", timeout_seconds=1800, **IO)
def version_task(params_path: str) -> str:
    from complex_ner.adapters.dvc import commit_outputs

    return commit_outputs(Path(params_path).resolve().parent)


@flow(name="validate_data", log_prints=True)
def validate_data(params_path: str = DEFAULT_PARAMS, overrides: list[str] | None = None) -> dict:
    """Ingest MultiCoNER, run the Great Expectations gate, then split and describe it."""
    ingest_task(params_path, overrides)
    verdict = validate_task(params_path, overrides)
    counts = split_task(params_path, overrides)
    stats_task(params_path, overrides)
    return {"validation": verdict, "splits": counts}


@flow(name="train", task_runner=ThreadPoolTaskRunner(max_workers=1), log_prints=True)
def train(params_path: str = DEFAULT_PARAMS, overrides: list[str] | None = None) -> list[dict]:
    """Provision the encoder, then one training task per language x architecture.

    One worker by default: on a CPU the runs would only compete for cores. Set
    ``PREFECT_TRAIN_WORKERS`` on a multi-GPU machine.
    """
    p = _params(params_path, overrides)
    provision_task(params_path, overrides)
    pairs = [(lang, arch) for lang in p.train.languages for arch in p.train.archs]
    futures = [train_task.submit(params_path, lang, arch, overrides) for lang, arch in pairs]
    return [f.result() for f in futures]


@flow(name="evaluate", log_prints=True)
def evaluate(params_path: str = DEFAULT_PARAMS, overrides: list[str] | None = None) -> dict:
    """Score every trained model, log reports to MLflow, publish the tables as artifacts."""
    p = _params(params_path, overrides)
    for lang in p.train.languages:
        for arch in p.train.archs:
            evaluate_task(params_path, lang, arch, overrides)
    summary = tables_task(params_path, overrides)
    report_dir = p.path(p.evaluate.report_dir)
    for lang in summary:
        table = (report_dir / f"{lang}.md").read_text(encoding="utf-8")
        create_markdown_artifact(
            markdown=table, key=f"results-{lang}", description=f"{lang} validation scores"
        )
    return summary


@flow(name="register", log_prints=True)
def register(params_path: str = DEFAULT_PARAMS, overrides: list[str] | None = None) -> list:
    """Register each language's best BERT+CRF model (champion or challenger)."""
    p = _params(params_path, overrides)
    if tracking.REGISTERED_ARCH not in p.train.archs:
        return []
    return register_task(params_path, overrides)


@flow(name="pipeline", log_prints=True)
def pipeline(params_path: str = DEFAULT_PARAMS, overrides: list[str] | None = None) -> dict:
    """The whole job: validate -> (WWM pretrain) -> train -> evaluate -> register, in one MLflow
    parent run."""
    p = _params(params_path, overrides)
    from flows.pretrain import pretrain

    with tracking.pipeline_run(p) as parent_id:
        data = validate_data(params_path, overrides)
        pretrain(params_path, overrides)  # writes SKIPPED markers when pretrain.enabled is false
        runs = train(params_path, overrides)
        summary = evaluate(params_path, overrides)
        registrations = register(params_path, overrides)
    uri = tracking.tracking_uri(p)
    for run in runs:
        create_link_artifact(
            link=tracking.run_link(p, run["run_id"]),
            link_text=f"MLflow run {run['lang']}-{run['arch']}",
            key=f"mlflow-{run['lang']}-{run['arch']}".replace("_", "-"),
        )
    lines = [f"MLflow parent run `{parent_id}` ({uri})", ""]
    lines += [
        f"- {r['lang']} {r['arch']}: run `{r['run_id']}`, best val macro-F1 {r['best_f1']:.4f}"
        for r in runs
    ]
    lines += [
        f"- registry `complex-ner-{r['lang']}` v{r['version']} -> **{r['alias']}**"
        for r in registrations
    ]
    create_markdown_artifact(
        markdown="\n".join(lines), key="mlflow-runs", description="MLflow runs and registry outcome"
    )
    if os.environ.get("COMPLEX_NER_VERSION_OUTPUTS", "1") == "1":
        version_task(params_path)
    return {
        "parent_run_id": parent_id,
        "data": data,
        "runs": runs,
        "summary": summary,
        "registrations": registrations,
    }


def _start_server(server: Any) -> None:
    # A failed start is left to the flow's own first API call, which retries and reports it.
    with contextlib.suppress(Exception):
        server.start()


def warm_start(params_path: str = DEFAULT_PARAMS, overrides: list[str] | None = None) -> None:
    """Start Prefect's temporary API server while this process does start-up work it needs anyway.

    Without ``PREFECT_API_URL``, the first flow call starts a server subprocess and idles until
    it answers: about 5 s with an initialised ``PREFECT_HOME``, about 20 s with a fresh one
    (database migrations). The second core is free meanwhile, so the imports the tasks would do
    later (GX, MLflow, transformers' BERT: about 8 s) and the MLflow store's set-up run then.
    Nothing here changes what the flow does; with a running server configured it only warms up.
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    params = _params(params_path, overrides)  # a bad params file fails before any server starts
    starter = None
    if not PREFECT_API_URL.value() and PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        from prefect.server.api.server import SubprocessASGIServer

        # The flow's client takes this same instance (one per port) and finds it running.
        starter = threading.Thread(target=_start_server, args=(SubprocessASGIServer(),))
        starter.start()
    try:
        import transformers.models.bert.modeling_bert  # noqa: F401 - the default encoder's

        from complex_ner.domain.validation import import_gx

        import_gx()  # the validate task's import, with the same settings

        tracking.setup(params)
    finally:
        if starter is not None:
            starter.join()


def run(params_path: str = DEFAULT_PARAMS, overrides: list[str] | None = None) -> dict:
    """What ``make run`` runs: :func:`warm_start`, then the :func:`pipeline` flow."""
    warm_start(params_path, overrides)
    return pipeline(params_path, overrides)


if __name__ == "__main__":
    import json

    args = sys.argv[1:]
    result = run(DEFAULT_PARAMS, args or None)
    print(json.dumps(result["summary"], indent=2))
