"""The whole pipeline as the flows run it: DVC's stages one at a time, recorded truthfully.

DVC owns the stage graph (``dvc.yaml``), caching and lineage (``dvc.lock``, experiments); the
caller (the Prefect flow) owns scheduling, retries and what the user sees. A run:

1. :func:`plan` checks the settings: params.yaml plus overrides (a named configuration such as
   ``configs/experiments/paper.yaml`` and/or ``section.key=value`` strings). A run with
   overrides is a DVC experiment and needs a git commit.
2. :func:`session` writes the overrides into params.yaml (as ``dvc exp run --set-param`` does),
   opens the MLflow parent run (tagged with the experiment and its overrides) and hands out the
   environment that nests the stages' runs under it.
3. :func:`run_stage` runs each stage of :func:`Session.stages` with ``dvc repro --single-item``
   (DVC skips it when it is up to date) and relays its output line by line.
4. :func:`save_experiment` records an override run with ``dvc exp save``; :func:`push` sends the
   outputs to the default remote. Leaving the session puts params.yaml back as it was.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from complex_ner.adapters import dvc, tracking
from complex_ner.core.config import ConfigError, Params, load_params, parse_override, read_mapping
from complex_ner.core.device import pick_device
from complex_ner.core.io import atomic_write_bytes
from complex_ner.core.paths import RUN_FILE, run_dir

#: Seconds a stage may run before it is stopped: a guard against a hung process, not a budget.
#: Training and pre-training get a day (the paper budget on a slow GPU); the rest two hours.
LONG_STAGES = ("train", "pretrain")
LONG_STAGE_TIMEOUT_S = 24 * 3600.0
STAGE_TIMEOUT_S = 2 * 3600.0

#: Stages a work pool may run (``flows/pipeline.py``, ``train_deployment``): they hold a device.
POOL_STAGES = LONG_STAGES
#: The Prefect global concurrency limits a pool stage holds a slot of while it runs, per device.
GPU_LIMIT, CPU_LIMIT = "gpu", "cpu"

#: Tags of the MLflow parent run of an experiment.
EXPERIMENT_TAG = "dvc_experiment"
OVERRIDES_TAG = "overrides"
CONFIG_TAG = "experiment_config"


@dataclass(frozen=True)
class Plan:
    """What a pipeline run will do, checked before anything runs.

    Attributes:
        params_file: The project's params.yaml (its folder is the DVC project).
        overrides: ``section.key=value`` strings applied on top of it, config file first.
        experiment: The DVC experiment name, or None for a plain run of params.yaml.
        config: The named configuration the overrides came from, if any.
    """

    params_file: Path
    overrides: tuple[str, ...] = ()
    experiment: str | None = None
    config: Path | None = None

    @property
    def root(self) -> Path:
        """The DVC project folder."""
        return self.params_file.parent


def override_text(key: str, value: Any) -> str:
    """``key=value`` with the value in YAML flow syntax, read back by ``parse_override``."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return f"{key}={text.removesuffix('...').strip()}"


def config_overrides(path: Path) -> list[str]:
    """The overrides of a named configuration: a YAML mapping ``section.key: value``.

    Raises:
        ConfigError: a missing or malformed file; the message names it and the bad key.
    """
    raw = read_mapping(path, "experiment configuration", "a mapping of section.key: value")
    out = []
    for key, value in raw.items():
        if not isinstance(key, str) or key.count(".") < 1 or not all(key.split(".")):
            raise ConfigError(f"{path}: {key!r}: expected a dotted key such as train.epochs")
        out.append(override_text(key, value))
    return out


def _resolve(path: str | Path, root: Path) -> Path:
    """A path as given when it exists, else relative to the project folder."""
    path = Path(path)
    return path if path.is_absolute() or path.exists() else root / path


def plan(
    params_file: str | Path,
    overrides: Sequence[str] = (),
    config: str | Path | None = None,
    experiment: str | None = None,
) -> Plan:
    """Check a run's settings before anything runs.

    Args:
        params_file: The project's params.yaml.
        overrides: ``section.key=value`` strings, applied after ``config``'s.
        config: A named configuration (e.g. ``configs/experiments/paper.yaml``).
        experiment: The experiment's name; default ``<config name or "override">-<time>``.
            A run with overrides or a name is recorded as a DVC experiment.

    Raises:
        ConfigError: a bad params file, configuration, override or experiment name, or an
            experiment outside a git repository with a commit.
    """
    params_file = Path(params_file).resolve()
    root = params_file.parent
    config_path = _resolve(config, root) if config else None
    texts = [*(config_overrides(config_path) if config_path else []), *overrides]
    load_params(params_file, texts)  # a bad value fails here, naming the field and override
    if not texts and experiment is None:
        return Plan(params_file)
    if not dvc.has_commit(root):
        raise ConfigError(
            f"{root}: a run with other settings is recorded as a DVC experiment, which needs a "
            "git repository with a commit (git init && git add -A && git commit)"
        )
    label = config_path.stem if config_path else "override"
    name = experiment or f"{label}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not dvc.valid_experiment_name(root, name):
        raise ConfigError(f"experiment name {name!r}: not a valid git ref name")
    if name in dvc.experiment_names(root):
        raise ConfigError(f"experiment name {name!r}: already used on this commit")
    return Plan(params_file, tuple(texts), name, config_path)


# --------------------------------------------------------------------------- a run


@dataclass
class Session:
    """A pipeline run in progress: its settings, parent MLflow run and the stages' environment.

    Attributes:
        env: Variables for the stage commands: the tracking URI, the parent run's id (their
            MLflow runs nest under it) and the experiment's name (their runs carry it as a tag).
    """

    plan: Plan
    params: Params
    parent_run_id: str
    env: dict[str, str] = field(default_factory=dict)

    def stages(self, targets: Sequence[str] = ()) -> list[dvc.Stage]:
        """The stages of this run (see :func:`stages`), with its params file in place."""
        return stages(self.plan.root, targets)


def stages(root: str | Path, targets: Sequence[str] = ()) -> list[dvc.Stage]:
    """DVC's stages of the project at ``root`` in run order (each after its upstream stages);
    with ``targets`` (stage names, or a ``foreach``/``matrix`` group such as ``pretrain``) only
    those and the stages they depend on."""
    return select(dvc.stage_graph(Path(root)), targets)


def select(stages: Sequence[dvc.Stage], targets: Sequence[str]) -> list[dvc.Stage]:
    """``targets`` and everything upstream of them, in the order of ``stages``.

    Raises:
        ValueError: a target that names no stage.
    """
    if not targets:
        return list(stages)
    by_name = {s.name: s for s in stages}
    wanted: set[str] = set()
    for target in targets:
        hits = [n for n in by_name if n == target or n.startswith(f"{target}@")]
        if not hits:
            raise ValueError(f"target {target!r}: no such stage (known: {', '.join(by_name)})")
        todo = list(hits)
        while todo:
            name = todo.pop()
            if name not in wanted:
                wanted.add(name)
                todo.extend(by_name[name].upstream)
    return [s for s in stages if s.name in wanted]


@contextmanager
def session(plan: Plan) -> Iterator[Session]:
    """Run inside: one pipeline per project at a time, overrides written into params.yaml,
    an MLflow parent run open. On leaving, params.yaml is put back as it was (byte for byte);
    ``dvc.lock`` and the outputs stay those of the run, so ``dvc status`` names what differs.

    Raises:
        DvcError: another pipeline is running in the project.
    """
    original = plan.params_file.read_bytes()
    with dvc.exclusive(plan.root, "pipeline"):
        try:
            if plan.overrides:
                dvc.set_params(plan.params_file, [parse_override(t) for t in plan.overrides])
            params = load_params(plan.params_file)
            tags: dict[str, str] = {}
            # A stage on another worker process logs to the same store as this run.
            env: dict[str, str] = {"MLFLOW_TRACKING_URI": tracking.tracking_uri(params)}
            if plan.experiment:
                tags[EXPERIMENT_TAG] = env[tracking.EXPERIMENT_ENV] = plan.experiment
                tags[OVERRIDES_TAG] = json.dumps(list(plan.overrides))
                if plan.config:
                    tags[CONFIG_TAG] = str(plan.config)
            name = plan.experiment or "pipeline"
            with tracking.pipeline_run(params, name=name, tags=tags) as parent_id:
                env[tracking.PARENT_ENV] = parent_id
                yield Session(plan, params, parent_id, env)
        finally:
            if plan.params_file.read_bytes() != original:
                atomic_write_bytes(plan.params_file, original)


def stage_timeout(name: str) -> float:
    """The time limit of a stage (its ``foreach``/``matrix`` group's)."""
    return LONG_STAGE_TIMEOUT_S if name.split("@")[0] in LONG_STAGES else STAGE_TIMEOUT_S


def run_stage(
    root: str | Path, name: str, log: dvc.Log, env: Mapping[str, str] | None = None
) -> dvc.StageRun:
    """Run (or skip, when up to date) one DVC stage, relaying its output lines to ``log``.

    Raises:
        DvcError: the stage failed; ``DvcLockError`` when only a lock was in the way.
    """
    return dvc.run_stage(Path(root), name, log, env, timeout=stage_timeout(name))


def on_pool(name: str) -> bool:
    """Whether a stage (``train@es-bert_crf``) is one a work pool runs when the flow has one."""
    return name.split("@")[0] in POOL_STAGES


def device_limit(params_file: str | Path) -> str:
    """The concurrency limit a pool stage takes a slot of on this machine: :data:`GPU_LIMIT`
    when ``train.device`` resolves to CUDA here, else :data:`CPU_LIMIT`."""
    device = pick_device(load_params(params_file).train.device)
    return GPU_LIMIT if device.type == "cuda" else CPU_LIMIT


def worth_retrying(error: BaseException | None) -> bool:
    """Whether a stage failed only on another DVC process's lock (a retry can then succeed)."""
    return isinstance(error, dvc.DvcLockError)


def save_experiment(
    params_file: str | Path, name: str, stage_names: Sequence[str], log: dvc.Log
) -> None:
    """Record the workspace, as the run left it, as the DVC experiment ``name``: its params
    (with the overrides), ``dvc.lock``, the hashes of what ``stage_names`` (the stages the run
    reproduced) made, and their uncached metrics and plots (``dvc exp show``)."""
    params_file = Path(params_file)
    root = params_file.parent
    ran = set(stage_names)
    records = [r for s in stages(root) if s.name in ran for r in s.records]
    include = [params_file.name, "dvc.lock", *records]
    dvc.save_experiment(root, name, stage_names, log, include=include)


def push(root: str | Path, log: dvc.Log) -> bool:
    """Send the outputs to the default DVC remote (False when none is set)."""
    return dvc.push(Path(root), log)


# --------------------------------------------------------------------------- what it made


def results(params: Params) -> dict[str, Any]:
    """What the last run left: training runs, validation scores, registry outcome, tables.

    Read from the stages' outputs, so it holds for stages DVC skipped as up to date.
    """
    runs = []
    for lang in params.train.languages:
        for arch in params.train.archs:
            path = run_dir(params, lang, arch) / RUN_FILE
            if path.is_file():
                runs.append(json.loads(path.read_text(encoding="utf-8")))
    metrics_file = params.path(params.evaluate.metrics_file)
    registry_file = params.path(params.register.output)
    report_dir = params.path(params.evaluate.report_dir)
    tables = {
        lang: (report_dir / f"{lang}.md").read_text(encoding="utf-8")
        for lang in params.train.languages
        if (report_dir / f"{lang}.md").is_file()
    }
    return {
        "runs": runs,
        "summary": json.loads(metrics_file.read_text("utf-8")) if metrics_file.is_file() else {},
        "registrations": (
            list(json.loads(registry_file.read_text("utf-8")).values())
            if registry_file.is_file()
            else []
        ),
        "tables": tables,
        "links": {r["run_id"]: tracking.run_link(params, r["run_id"]) for r in runs},
    }


def warm_up(params_file: str | Path) -> None:
    """The start-up work of a run that does not need the Prefect server: read params.yaml,
    open the MLflow store (its tables are created on first use), import DVC's graph code."""
    dvc.import_dvc()
    tracking.setup(load_params(params_file))
