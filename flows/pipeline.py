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
    python flows/pipeline.py --train-deployment stage/train-local   # training on a work pool

With ``train_deployment``, the ``train`` and ``pretrain`` stages do not run in the flow's
process: each becomes a flow run of that deployment of :func:`stage_flow`, which the workers of
its work pool pick up (each run in its own process). A run holds a slot of its device's global
concurrency limit (``gpu`` or ``cpu``, ``prefect gcl create``) while it trains, so runs beyond
the slots queue instead of sharing a device. See docs/scaling.md.
"""

# complex_ner first: importing it sets the offline and Prefect defaults (PREFECT_HOME, the
# temporary server's start-up timeout), which Prefect reads once, when it is imported.
from complex_ner.app import pipeline as app  # isort: skip

import argparse
import contextlib
import json
import os
import socket
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.deployments import run_deployment
from prefect.futures import PrefectFuture
from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED
from prefect.states import Completed, State
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


# --------------------------------------------------------------------------- on a work pool

#: Seconds between two looks at a flow run on the pool.
POLL_S = 2.0


@flow(name="stage", flow_run_name="{name}")
def stage_flow(root: str, name: str, env: dict[str, str]) -> State:
    """One DVC stage in a work pool's worker process, holding a slot of its device's global
    concurrency limit while it runs; the state message is the run's record (JSON)."""
    logger = get_run_logger()
    limit = app.device_limit(Path(root) / "params.yaml")
    asked = time.time()
    # strict: without the limit on the server (`prefect gcl create cpu --limit 1`) the run
    # fails, naming it, rather than training unlimited.
    with concurrency(limit, occupy=1, strict=True):
        started = time.time()
        logger.info("%s: %r slot after %.1f s", name, limit, started - asked)
        run = stage_task(root, name, env)
        finished = time.time()
    # A process worker starts each flow run as its child: the parent names the worker.
    where = {"host": socket.gethostname(), "worker_pid": os.getppid(), "limit": limit}
    record = {**run, **where, "queued_s": started - asked, "started": started, "finished": finished}
    return Completed(message=json.dumps(record))


@task(name="dispatch", task_run_name="dispatch {name}")
def dispatch_task(deployment: str, root: str, name: str, env: dict[str, str]) -> str:
    """A flow run of ``deployment`` (a :func:`stage_flow` deployment) for one stage; its id.
    Returns at once: the pool's workers run it."""
    run = run_deployment(
        deployment,
        parameters={"root": root, "name": name, "env": env},
        flow_run_name=name,
        timeout=0,
    )
    get_run_logger().info("%s: flow run %s on %s", name, run.id, deployment)
    return str(run.id)


@task(name="await", task_run_name="await {name}")
def await_task(flow_run_id: str, name: str) -> dict[str, Any]:
    """Wait for a stage's flow run on the pool; its record, or an error naming its end state."""
    with get_client(sync_client=True) as client:
        while True:
            state = client.read_flow_run(UUID(flow_run_id)).state
            if state is not None and state.is_final():
                break
            time.sleep(POLL_S)
    if not state.is_completed():
        raise RuntimeError(f"{name}: flow run {flow_run_id} {state.type.value}: {state.message}")
    return json.loads(state.message or "{}")


def _run_stages(
    session: app.Session, targets: list[str], train_deployment: str | None = None
) -> dict[str, dict[str, Any]]:
    """Submit every stage, each waiting for its upstream; raise the first stage failure.

    With ``train_deployment``, a pool stage is dispatched as soon as its upstream is done and
    awaited only when a later stage needs it (or at the end): a flow with one thread still puts
    all of ``train@...`` on the pool at once.
    """
    root = str(session.plan.root)
    futures: dict[str, PrefectFuture] = {}
    dispatched: dict[str, PrefectFuture] = {}

    def finished(name: str) -> PrefectFuture:
        if name in dispatched:
            futures[name] = await_task.submit(dispatched.pop(name), name)
        return futures[name]

    for stage in session.stages(targets):
        upstream = [finished(u) for u in stage.upstream if u in futures or u in dispatched]
        if train_deployment and app.on_pool(stage.name):
            dispatched[stage.name] = dispatch_task.submit(
                train_deployment, root, stage.name, session.env, wait_for=upstream
            )
        else:
            futures[stage.name] = stage_task.submit(
                root, stage.name, session.env, wait_for=upstream
            )
    for name in list(dispatched):
        finished(name)
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
    train_deployment: str | None = None,
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
        train_deployment: A deployment of :func:`stage_flow` (``stage/train-local``) whose work
            pool runs the ``train`` and ``pretrain`` stages; default: this process.
    """
    plan = app.plan(params_path, overrides or [], config=config, experiment=experiment)
    logger = get_run_logger()
    if plan.experiment:
        logger.info("DVC experiment %s: %s", plan.experiment, " ".join(plan.overrides))
    with app.session(plan) as session:
        stages = _run_stages(session, targets or [], train_deployment)
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
    parser.add_argument(
        "--train-deployment", help="run train/pretrain on this stage deployment's work pool"
    )
    args = parser.parse_args(argv)
    app.plan(args.params, args.overrides, args.config, args.name)  # bad settings: no server
    warm_start(args.params)
    return pipeline(
        args.params, args.overrides, args.config, args.name, args.target, args.train_deployment
    )


if __name__ == "__main__":
    result = main(sys.argv[1:])
    print(json.dumps(result["summary"], indent=2))
