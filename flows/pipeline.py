"""Prefect 3 flow ``pipeline``: every DVC stage of ``dvc.yaml`` as a Prefect task.

``dvc.yaml`` is the only definition of the stage graph: the flow asks DVC for the stages and their
order, and each task runs its stage with ``dvc repro --single-item <stage>``. DVC skips a stage
that is up to date, runs its ``complex-ner`` command, caches the outputs and writes
``dvc.lock``; so after a run ``dvc repro`` has nothing to do. Prefect schedules the tasks
(each waits for its upstream stages), retries a stage that only met another DVC process's lock,
and logs each stage's output as it arrives (training prints epoch, step, loss, validation F1 and
time left). A run with other settings (a named configuration, ``section.key=value`` overrides)
is recorded as a DVC experiment and tagged on the MLflow parent run; see
``complex_ner.app.pipeline`` and docs/architecture.md.

    python flows/pipeline.py                                    # what `make run` runs
    python flows/pipeline.py --config configs/experiments/paper.yaml   # `make run-paper`
    python flows/pipeline.py train.epochs=1 --name quick        # an experiment
    python flows/pipeline.py --target pretrain                  # some stages and their upstream
"""

# complex_ner first: importing it sets the offline and Prefect defaults (PREFECT_HOME, the
# temporary server's start-up timeout), which Prefect reads once, when it is imported.
from complex_ner.app import pipeline as app  # isort: skip

import argparse
import contextlib
import json
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.futures import PrefectFuture
from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED
from prefect.task_runners import ThreadPoolTaskRunner

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PARAMS = str(ROOT / "params.yaml")


def _met_a_lock(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a stage only when another DVC process's lock was in the way (DVC already waits for
    its repository lock; this covers the rest). A stage that failed on its data or code would
    fail again."""
    return app.worth_retrying(state.result(raise_on_failure=False))


@task(
    name="stage",
    task_run_name="{name}",
    retries=3,
    retry_delay_seconds=5,
    retry_condition_fn=_met_a_lock,
)
def stage_task(root: str, name: str, env: dict[str, str]) -> dict[str, Any]:
    """One DVC stage; its output lines go to the task's log as they arrive."""
    logger = get_run_logger()
    run = app.run_stage(root, name, logger.info, env)
    logger.info("%s: %s in %.1f s", name, run.status, run.seconds)
    return asdict(run)


@task(name="save-experiment")
def experiment_task(params_path: str, name: str, stages: list[str]) -> str:
    """Record the run as a DVC experiment (``dvc exp show``)."""
    app.save_experiment(params_path, name, stages, get_run_logger().info)
    return name


@task(name="push", retries=2, retry_delay_seconds=10)
def push_task(root: str) -> bool:
    """``dvc push``: the remote then holds what ``dvc.lock`` names."""
    return app.push(root, get_run_logger().info)


def _run_stages(session: app.Session, targets: list[str]) -> dict[str, dict[str, Any]]:
    """Submit every stage, each waiting for its upstream; raise the first stage failure."""
    futures: dict[str, PrefectFuture] = {}
    for stage in session.stages(targets):
        futures[stage.name] = stage_task.submit(
            str(session.plan.root),
            stage.name,
            session.env,
            wait_for=[futures[u] for u in stage.upstream if u in futures],
        )
    for future in futures.values():
        future.wait()
    # Stages after a failed one never start (NotReady); the failure itself is what to report.
    for future in futures.values():
        if future.state.is_failed() or future.state.is_crashed():
            future.result()
    return {name: future.result() for name, future in futures.items()}


@flow(name="pipeline", task_runner=ThreadPoolTaskRunner(max_workers=1))
def pipeline(
    params_path: str = DEFAULT_PARAMS,
    overrides: list[str] | None = None,
    config: str | None = None,
    experiment: str | None = None,
    targets: list[str] | None = None,
) -> dict[str, Any]:
    """The whole job, stage by stage as DVC defines it, inside one MLflow parent run.

    One stage at a time by default: on a CPU concurrent trainings only compete for cores. Run
    ``pipeline.with_options(task_runner=ThreadPoolTaskRunner(max_workers=N))`` to train the
    independent ``train@...`` stages side by side (see docs/architecture.md).

    Args:
        params_path: The project's params.yaml; its folder is the DVC project.
        overrides: ``section.key=value`` settings on top of params.yaml (after ``config``'s).
        config: A named configuration, e.g. ``configs/experiments/paper.yaml``.
        experiment: The DVC experiment's name (default: the configuration's, and the time).
        targets: Run only these stages (or ``foreach``/``matrix`` groups) and their upstream.
    """
    plan = app.plan(params_path, overrides or [], config=config, experiment=experiment)
    logger = get_run_logger()
    if plan.experiment:
        logger.info("DVC experiment %s: %s", plan.experiment, " ".join(plan.overrides))
    with app.session(plan) as session:
        stages = _run_stages(session, targets or [])
        if plan.experiment:
            experiment_task(str(plan.params_file), plan.experiment, list(stages))
        pushed = push_task(str(plan.root))
        made = app.results(session.params)
    _publish(session, made)
    return {
        "parent_run_id": session.parent_run_id,
        "experiment": plan.experiment,
        "overrides": list(plan.overrides),
        "stages": stages,
        "pushed": pushed,
        **{k: made[k] for k in ("runs", "summary", "registrations")},
    }


def _publish(session: app.Session, made: dict[str, Any]) -> None:
    """Prefect artifacts: the results tables, and links to the MLflow runs."""
    for lang, table in made["tables"].items():
        create_markdown_artifact(
            markdown=table, key=f"results-{lang}", description=f"{lang} held-out scores"
        )
    for run in made["runs"]:
        create_link_artifact(
            link=made["links"][run["run_id"]],
            link_text=f"MLflow run {run['lang']}-{run['arch']}",
            key=f"mlflow-{run['lang']}-{run['arch']}".replace("_", "-"),
        )
    lines = [f"MLflow parent run `{session.parent_run_id}`", ""]
    if session.plan.experiment:
        lines += [f"DVC experiment `{session.plan.experiment}`: {list(session.plan.overrides)}"]
    lines += [
        f"- {r['lang']} {r['arch']}: run `{r['run_id']}`, best val macro-F1 {r['best_f1']:.4f}"
        for r in made["runs"]
    ]
    lines += [
        f"- registry `complex-ner-{r['lang']}` v{r['version']} -> **{r['alias']}**"
        for r in made["registrations"]
    ]
    create_markdown_artifact(
        markdown="\n".join(lines), key="mlflow-runs", description="MLflow runs and registry outcome"
    )


# --------------------------------------------------------------------------- make run


def _start_server(server: Any) -> None:
    # A failed start is left to the flow's own first API call, which retries and reports it.
    with contextlib.suppress(Exception):
        server.start()


def warm_start(params_path: str = DEFAULT_PARAMS) -> None:
    """Start Prefect's temporary API server while this process does start-up work it needs anyway.

    Without ``PREFECT_API_URL`` the first flow call starts a server subprocess and idles until it
    answers (5-30 s); no stage can start before. Meanwhile the second core opens the MLflow store
    (its tables are created on first use: about 10 s) and imports DVC. With a configured server
    it only does that work. A bad params file fails first, before any server starts.
    """
    app.plan(params_path)
    starter = None
    if not PREFECT_API_URL.value() and PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        from prefect.server.api.server import SubprocessASGIServer

        # The flow's client takes this same instance (one per port) and finds it running.
        starter = threading.Thread(target=_start_server, args=(SubprocessASGIServer(),))
        starter.start()
    try:
        app.warm_up(params_path)
    finally:
        if starter is not None:
            starter.join()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """``python flows/pipeline.py [section.key=value ...] [--config F] [--name N] [--target S]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="section.key=value settings")
    parser.add_argument("--params", default=DEFAULT_PARAMS, help="the params file")
    parser.add_argument("--config", help="a named configuration (configs/experiments/*.yaml)")
    parser.add_argument("--name", help="the DVC experiment's name")
    parser.add_argument("--target", action="append", default=[], help="a stage to run")
    args = parser.parse_args(argv)
    app.plan(args.params, args.overrides, args.config, args.name)  # bad settings: no server
    warm_start(args.params)
    return pipeline(args.params, args.overrides, args.config, args.name, args.target)


if __name__ == "__main__":
    result = main(sys.argv[1:])
    print(json.dumps(result["summary"], indent=2))
