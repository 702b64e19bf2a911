"""Pipeline overhead: the Prefect pipeline's wall time against a bare loop over the same stages.

Two sides run the same config, each in a fresh Python process and a fresh temporary project
(a DVC repository holding the project's ``dvc.yaml``, its ``params.yaml`` with the config's
overrides written in, the package sources the stages depend on, its own ``PREFECT_HOME`` and
its own MLflow store):

- **pipeline**: the Prefect pipeline as ``make run`` starts it; each task runs one DVC stage
  (``dvc repro --single-item``: a ``complex-ner`` process, DVC hashing and caching);
- **bare**: a plain loop over the same stages in one process: each stage's ``complex-ner``
  command, in the order DVC gives the flow, called in-process (the CLI parses the arguments and
  calls the application layer, ``complex_ner.app.stages``). MLflow tracking and the Great
  Expectations gate are part of the application layer, so both sides do them; the difference is
  what Prefect, DVC and a process per stage add.

They run interleaved (bare, pipeline, bare, pipeline, ...), ``--repeats`` times each. The parent
times each process from spawn to exit; the bare child times each stage call; the pipeline child
reads back the flow and task run times Prefect recorded. The training loop's own time comes
from each run's ``history.json`` (``epoch_seconds``), so "wall minus training loop" shows the
fixed cost without the loop's spread on a shared machine.

    python -m benchmarks.bench_overhead [--quick] [--json PATH] [--sentences N]
    python -m benchmarks.bench_overhead --make-run-config --repeats 3   # what `make run` does
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    ROOT,
    Timing,
    base_parser,
    child_env,
    emit,
    es_train_path,
    fmt,
    load_sentences,
    machine_info,
    parse,
    pick_encoder,
    result,
    target,
    write_json,
)
from complex_ner.adapters.dvc import set_params
from complex_ner.app.pipeline import stages
from complex_ner.core.config import load_params, parse_override
from complex_ner.core.io import atomic_write_text
from complex_ner.core.paths import HISTORY_FILE
from complex_ner.domain.data import format_conll

SIDES = ("bare", "pipeline")
#: Target of the performance issue: the pipeline adds less than this share of the bare run.
OVERHEAD_TARGET_PCT = 10.0
COLUMNS = [
    "measure (seconds)",
    "bare runs",
    "pipeline runs",
    "bare median",
    "pipeline median",
    "pipeline − bare",
]


# --------------------------------------------------------------------------- the stage graph


def stage_commands(project: Path) -> list[tuple[str, list[str]]]:
    """Each DVC stage of ``project`` with its ``complex-ner`` arguments, in the order the
    pipeline runs them (DVC's graph, as :func:`complex_ner.app.pipeline.stages` gives it to
    the flow).

    Raises:
        ValueError: a stage whose command is not a ``complex-ner`` command.
    """
    out = []
    for stage in stages(project):
        argv = shlex.split(stage.cmd)
        if not argv or argv[0] != "complex-ner":
            raise ValueError(
                f"{project / 'dvc.yaml'}: stage {stage.name!r} runs {stage.cmd!r}, "
                "not a complex-ner command"
            )
        out.append((stage.name, argv[1:]))
    return out


# --------------------------------------------------------------------------- the project


def write_params(path: Path, overrides: Sequence[str]) -> None:
    """The project's ``params.yaml`` with ``section.key=value`` overrides written in.

    Raises:
        ConfigError: an override names no field or has a bad value.
    """
    shutil.copyfile(ROOT / "params.yaml", path)
    set_params(path, [parse_override(text) for text in overrides])
    load_params(path)  # fail here, not in a child, on a bad override


def make_project(folder: Path, overrides: Sequence[str], sentences: Sequence[Any] | None) -> Path:
    """A fresh DVC project: dvc.yaml, params with ``overrides``, the data slice, and the files
    of the project the stages depend on that no stage makes (the package sources).

    The source slice (when given) goes to ``source/es/train.conll``; the overrides must point
    ``data.source_dir`` there.
    """
    from dvc.repo import Repo

    folder.mkdir(parents=True)
    shutil.copyfile(ROOT / "dvc.yaml", folder / "dvc.yaml")
    write_params(folder / "params.yaml", overrides)
    if sentences is not None:
        atomic_write_text(folder / "source" / "es" / "train.conll", format_conll(sentences))
    with Repo.init(str(folder), no_scm=True) as repo:
        with repo.config.edit() as conf:
            conf["core"]["analytics"] = False
            conf["core"]["check_update"] = False
        if (ROOT / ".dvcignore").is_file():
            shutil.copyfile(ROOT / ".dvcignore", folder / ".dvcignore")
        outs = [Path(o.fs_path) for stage in repo.index.stages for o in stage.outs]
        deps = {Path(d.fs_path) for stage in repo.index.stages for d in stage.deps}
    for path in sorted(deps):
        made = any(path.is_relative_to(o) or o.is_relative_to(path) for o in outs)
        if made or path.exists() or not path.is_relative_to(folder):
            continue
        source = ROOT / path.relative_to(folder)
        if source.is_dir():
            shutil.copytree(source, path, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif source.is_file():
            shutil.copy2(source, path)
    return folder


def side_env(project: Path) -> dict[str, str]:
    """Offline, isolated: Prefect and MLflow state inside ``project``; ``complex-ner`` on PATH."""
    env = child_env(
        PREFECT_HOME=str(project / ".prefect"),
        PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    )
    for key in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "COMPLEX_NER_DATA_SOURCE"):
        env.pop(key, None)
    return env


# --------------------------------------------------------------------------- the children


Runner = Callable[[Path], dict[str, Any]]


def bare_runner() -> Runner:
    """The bare side: every stage's command in order, in this process (the CLI calls the
    application layer); seconds per stage. The working directory is the project, whose
    params.yaml the commands read."""
    # Imported here, in the bare child only: the CLI imports torch, which the pipeline's own
    # process never does (its stages run in their own processes).
    from complex_ner.cli import app

    def run(project: Path) -> dict[str, Any]:
        timings = []
        for name, argv in stage_commands(project):
            start = time.perf_counter()
            code = app(argv, standalone_mode=False)
            if code not in (None, 0):
                raise RuntimeError(f"stage {name}: complex-ner {shlex.join(argv)} exited {code}")
            timings.append({"stage": name, "seconds": time.perf_counter() - start})
        return {"stages": timings}

    return run


def prefect_records() -> dict[str, Any]:
    """Flow and task run times the (still running) Prefect server recorded."""
    from prefect.client.orchestration import get_client

    def epoch(moment: _dt.datetime | None) -> float | None:
        return moment.timestamp() if moment is not None else None

    with get_client(sync_client=True) as client:
        flows = {f.id: f.name for f in client.read_flows()}
        flow_runs = [
            {
                "flow": flows.get(r.flow_id, "?"),
                "seconds": r.total_run_time.total_seconds(),
                "start": epoch(r.start_time),
                "end": epoch(r.end_time),
                "state": r.state_name,
            }
            for r in client.read_flow_runs()
        ]
        task_runs = [
            {
                "task": r.name,
                "seconds": r.total_run_time.total_seconds(),
                "start": epoch(r.start_time),
                "state": r.state_name,
            }
            for r in client.read_task_runs()
        ]
    return {"flow_runs": flow_runs, "task_runs": task_runs}


def pipeline_runner() -> Runner:
    """The pipeline side: the flow as `make run` starts it (``flows/pipeline.py``)."""
    # Imported here, in the pipeline child only: the bare side does not pay for Prefect.
    from flows.pipeline import main as run_flow

    def run(project: Path) -> dict[str, Any]:
        run_flow(["--params", str(project / "params.yaml")])
        return {}

    return run


def child_main(side: str, project: Path, out: Path) -> None:
    """One measured process: run ``side`` in ``project``, write its record to ``out``.

    The side's imports come before ``work_start``, so they count as start-up.
    """
    import psutil

    run = bare_runner() if side == "bare" else pipeline_runner()
    work_start = time.time()
    record = run(project)
    work_end = time.time()
    if side == "pipeline":
        record.update(prefect_records())  # read after the work, from the server still running
    # The children are the stage processes the pipeline waited for (DVC and its command).
    cpu = psutil.Process().cpu_times()
    write_json(
        out,
        {
            "side": side,
            "work_start": work_start,
            "work_end": work_end,
            "cpu": cpu.user + cpu.system + cpu.children_user + cpu.children_system,
            **record,
        },
    )


# --------------------------------------------------------------------------- the parent


def run_side(side: str, project: Path, timeout_s: float) -> dict[str, Any]:
    """Run one measured process; its record plus wall, start-up and teardown seconds.

    Raises:
        RuntimeError: the child failed; the message ends with its log.
    """
    out, log = project / f"{side}-record.json", project / f"{side}.log"
    cmd = [sys.executable, "-m", "benchmarks.bench_overhead", "--child", side]
    cmd += ["--project", str(project), "--child-out", str(out)]
    spawn = time.time()
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as handle:
        proc = subprocess.run(
            cmd,
            cwd=project,
            env=side_env(project),
            stdout=handle,
            stderr=subprocess.STDOUT,
            timeout=timeout_s,
            check=False,
        )
    wall = time.perf_counter() - start
    exited = time.time()
    if proc.returncode != 0 or not out.is_file():
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"{side} run failed (exit {proc.returncode}):\n{tail}")
    record = json.loads(out.read_text(encoding="utf-8"))
    history = [
        epoch
        for path in sorted(project.rglob(HISTORY_FILE))
        for epoch in json.loads(path.read_text(encoding="utf-8"))
    ]
    record.update(
        wall=wall,
        startup=record["work_start"] - spawn,
        teardown=exited - record["work_end"],
        train_loop=sum(h["epoch_seconds"] for h in history),
        epochs=len(history),
        loadavg=[round(x, 2) for x in os.getloadavg()],
    )
    return record


def _task_seconds(record: dict[str, Any], stage: str) -> float | None:
    """Seconds of the Prefect task run(s) named after ``stage`` (the flow names each task run
    after its DVC stage)."""
    found = [r["seconds"] for r in record.get("task_runs", []) if r["task"] == stage]
    return sum(found) if found else None


def derive(record: dict[str, Any], stage_names: Sequence[str]) -> dict[str, float | None]:
    """The table's measures of one run (None where they do not apply to its side)."""
    out: dict[str, float | None] = {
        "wall": record["wall"],
        "wall_minus_loop": record["wall"] - record["train_loop"],
        "train_loop": record["train_loop"],
        "startup": record["startup"],
        "teardown": record["teardown"],
        "work": record["work_end"] - record["work_start"],
        "cpu": record["cpu"],
        "prefect_before_flow": None,
        "prefect_orchestration": None,
    }
    if record["side"] == "bare":
        seconds = {s["stage"]: s["seconds"] for s in record["stages"]}
        out.update({f"stage:{name}": seconds.get(name) for name in stage_names})
        return out
    out.update({f"stage:{name}": _task_seconds(record, name) for name in stage_names})
    flows = [r for r in record.get("flow_runs", []) if r["start"] is not None]
    if flows:
        first = min(r["start"] for r in flows)
        outer = max(flows, key=lambda r: r["seconds"])
        out["prefect_before_flow"] = first - record["work_start"]
        tasks = sum(r["seconds"] for r in record.get("task_runs", []))
        out["prefect_orchestration"] = outer["seconds"] - tasks
    return out


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return Timing.of(present).median if present else None


def table_rows(derived: dict[str, list[dict[str, Any]]], stage_names: Sequence[str]) -> list:
    """One row per measure: every run of each side, the medians and their difference."""
    labels = [
        ("wall", "**wall: process spawn to exit**"),
        ("wall_minus_loop", "wall minus training loop (robust to its spread under load)"),
        ("train_loop", "training loop (fit's epoch_seconds, history.json)"),
        ("startup", "process start + imports (spawn to work start)"),
        ("work", "work (the stages, or the whole flow call)"),
        ("teardown", "teardown (work end to exit)"),
    ]
    labels += [
        (f"stage:{name}", f"stage {name} (bare: the call; pipeline: its Prefect task)")
        for name in stage_names
    ]
    labels += [
        ("prefect_before_flow", "Prefect: work start to the first flow run's start (server)"),
        ("prefect_orchestration", "Prefect: longest flow run minus all task runs"),
        ("cpu", "CPU seconds: the measured process and the processes it waited for"),
    ]
    rows = []
    for key, label in labels:
        bare = [d[key] for d in derived["bare"]]
        pipe = [d[key] for d in derived["pipeline"]]
        mb, mp = _median(bare), _median(pipe)
        rows.append(
            [
                label,
                ", ".join(fmt(v) for v in bare) if mb is not None else None,
                ", ".join(fmt(v) for v in pipe) if mp is not None else None,
                mb,
                mp,
                mp - mb if mb is not None and mp is not None else None,
            ]
        )
    return rows


def report(
    args: argparse.Namespace,
    records: dict[str, list[dict[str, Any]]],
    stage_names: list[str],
    config: dict[str, Any],
    machine: dict[str, Any],
) -> dict[str, Any]:
    """The table, the summary against the target and the notes."""
    derived = {side: [derive(r, stage_names) for r in records[side]] for side in SIDES}
    rows = table_rows(derived, stage_names)

    def med(side: str, key: str) -> float:
        return _median([d[key] for d in derived[side]]) or 0.0

    bare_wall = med("bare", "wall")
    overhead = med("pipeline", "wall") - bare_wall
    fixed = med("pipeline", "wall_minus_loop") - med("bare", "wall_minus_loop")
    pct, fixed_pct = 100 * overhead / bare_wall, 100 * fixed / bare_wall
    rows += [
        ["**overhead: pipeline − bare wall (medians)**", None, None, None, None, overhead],
        ["**overhead, % of bare wall**", None, None, None, None, pct],
        ["**fixed cost (wall minus loop), % of bare wall**", None, None, None, None, fixed_pct],
    ]
    goal = f"< {OVERHEAD_TARGET_PCT:g}%"
    summary = [
        target("pipeline wall, median (s)", round(med("pipeline", "wall"), 1)),
        target("bare wall, median (s)", round(bare_wall, 1)),
        target(
            f"overhead at this config ({config['mode']}), % of bare wall",
            round(pct, 1),
            goal,
            pct < OVERHEAD_TARGET_PCT,
        ),
        target(
            "fixed cost (wall minus training loop), % of bare wall",
            round(fixed_pct, 1),
            goal,
            fixed_pct < OVERHEAD_TARGET_PCT,
        ),
        target("fixed cost (s)", round(fixed, 1)),
    ]
    order = [f"{side} {k + 1}" for k in range(config["repeats"]) for side in SIDES]
    loads = "; ".join(
        f"{side} {k + 1}: {records[side][k]['loadavg']}"
        for k in range(config["repeats"])
        for side in SIDES
    )
    notes = [
        f"Config: {config['source']}; overrides {' '.join(config['overrides']) or 'none'}. "
        "Each run: a fresh process and a fresh project (fresh PREFECT_HOME, MLflow store and "
        "DVC cache, as after a clone).",
        f"Order: {', '.join(order)}; load average (1, 5, 15 min) after each run: {loads}.",
        f"Stages in the order DVC gives the flow: {', '.join(stage_names)}. A pipeline "
        "stage's time is its "
        "Prefect task run (a `dvc repro` of the stage: process start, imports, the work, DVC "
        "hashing and caching); a bare stage's time is the call alone.",
    ]
    return result(
        args,
        "Pipeline overhead: the Prefect pipeline against a bare loop over the stages",
        COLUMNS,
        rows,
        summary=summary,
        notes=notes,
        machine=machine,
        config=config,
        stages=stage_names,
        records=records,
        derived=derived,
        overhead_s=overhead,
        overhead_pct=pct,
        fixed_cost_s=fixed,
    )


def small_overrides(quick: bool, encoder: Path, batch_size: int, threads: int) -> list[str]:
    """The small config: es only, bert_crf, one epoch on the source slice under ``source/``."""
    out = [
        "data.source_dir=source",
        "data.languages=[es]",
        "train.languages=[es]",
        "pretrain.languages=[es]",
        "train.archs=[bert_crf]",
        "train.epochs=1",
        "train.max_train_sentences=0",
        f"train.batch_size={batch_size}",
        f"train.threads={threads}",
        f"model.encoder={encoder}",
    ]
    if quick:
        out += ["model.max_length=64", "model.stride=16"]
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = base_parser("overhead", __doc__, threads=0)
    parser.add_argument("--sentences", type=int, default=None, help="source slice of es train")
    parser.add_argument(
        "--make-run-config",
        action="store_true",
        help="params.yaml's own config on the whole source (what `make run` trains)",
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per process")
    parser.add_argument("--keep", type=Path, default=None, help="keep the projects here")
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--project", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parse(parser, argv)
    if args.child:
        child_main(args.child, args.project, args.child_out)
        return {}

    n = args.sentences or (120 if args.quick else 200)
    repeats = args.repeats or (1 if args.quick else 2)
    machine = machine_info()
    records: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        base = args.keep or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        encoder = pick_encoder(args, base).resolve()
        if args.make_run_config:
            real_source = es_train_path().parent.parent.resolve()
            overrides = [f"data.source_dir={real_source}", f"train.threads={args.threads}"]
            sentences, source = None, f"{real_source}, params.yaml's own config"
        else:
            overrides = small_overrides(args.quick, encoder, args.batch_size, args.threads)
            # The pipeline's data gate needs real MultiCoNER sentences (every entity type).
            sentences, source = load_sentences(n)
        stage_names: list[str] = []
        for k in range(repeats):
            for side in SIDES:
                project = make_project(base / f"{side}-{k + 1}", overrides, sentences)
                stage_names = stage_names or [name for name, _ in stage_commands(project)]
                print(f"run {k + 1}/{repeats}: {side} in {project}", flush=True)
                rec = run_side(side, project, args.timeout)
                records[side].append(rec)
                print(f"  wall {rec['wall']:.1f} s, training loop {rec['train_loop']:.1f} s")
                if args.keep is None:
                    shutil.rmtree(project, ignore_errors=True)  # models, DVC cache: ~GB a run
    config = {
        "mode": "make-run config" if args.make_run_config else f"es {n} sentences, 1 epoch",
        "sentences": None if args.make_run_config else n,
        "repeats": repeats,
        "overrides": overrides,
        "source": source,
        "encoder": str(encoder),
    }
    return emit(report(args, records, stage_names, config, machine), args.json)


if __name__ == "__main__":
    main()
