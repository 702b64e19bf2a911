"""DVC, the owner of the stage graph and its lineage: its graph, stages, experiments and push.

``dvc.yaml`` is the only definition of the pipeline. This module reads the graph DVC builds from
it and runs DVC's own commands as subprocesses (``dvc repro --single-item <stage>``,
``dvc exp save``, ``dvc push``), relaying their output line by line to a callback as it arrives,
so that whoever schedules the stages (the Prefect flow) shows progress while a stage runs.
DVC decides whether a stage is up to date, runs its ``cmd``, caches its outputs and writes
``dvc.lock``; nothing here hashes or commits outputs itself.

Every command runs with ``--wait-for-lock``: DVC holds its repository lock only while it checks,
caches and records a stage, and releases it while the stage's command runs, so stages started
together queue for those short phases instead of failing with "Unable to acquire lock".
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from complex_ner.core.config import drop_language_changes
from complex_ner.core.io import atomic_write_text
from complex_ner.core.secrets import redact, secret_values

Log = Callable[[str], None]

#: What DVC prints when another DVC process holds a lock it needs (repository or output lock).
LOCK_MESSAGES = ("Unable to acquire lock", "is busy, it is being blocked by")
#: DVC's hint after each stage; the pipeline pushes once at its end.
PUSH_HINT = "Use `dvc push` to send your updates to remote storage."
#: Output lines kept for the error message of a failed command.
TAIL_LINES = 40
#: Seconds a stopped command gets to clean up (DVC releases its locks) before it is killed.
STOP_GRACE_S = 15.0


class DvcError(RuntimeError):
    """A DVC command failed; the message names the command and ends with its last output."""


class DvcLockError(DvcError):
    """A DVC command found a lock held by another DVC process (worth retrying)."""


class DvcTimeoutError(DvcError):
    """A DVC command ran past its time limit and was stopped."""


@dataclass(frozen=True)
class Stage:
    """One stage of DVC's graph (``foreach``/``matrix`` entries expanded from params.yaml).

    Attributes:
        name: DVC's address of the stage, e.g. ``split`` or ``train@es-bert_crf``.
        cmd: The command the stage runs.
        upstream: Names of the stages whose outputs it depends on.
        records: Its metrics and plots files that DVC does not cache (paths relative to the
            project): git has to keep them for ``dvc exp show`` to show an experiment's.
    """

    name: str
    cmd: str
    upstream: tuple[str, ...]
    records: tuple[str, ...] = ()


@dataclass(frozen=True)
class StageRun:
    """What ``dvc repro`` did with one stage: ``ran``, ``restored`` (from DVC's run cache) or
    ``skipped`` (up to date)."""

    name: str
    status: str
    seconds: float


# --------------------------------------------------------------------------- the graph


def _address(stage: Any, root: Path) -> str:
    """How ``dvc repro`` run in ``root`` names a stage: ``name`` (``train@es-bert_crf``) in the
    root's dvc.yaml, ``path/dvc.yaml:name`` elsewhere."""
    dvcfile = Path(stage.path).resolve()
    if dvcfile == root / "dvc.yaml":
        return stage.name
    return f"{dvcfile.relative_to(root)}:{stage.name}"


def stage_graph(root: Path) -> list[Stage]:
    """DVC's stage graph of the project at ``root``, every stage after its upstream stages.

    Built by DVC itself (``dvc.repo.Repo(root).index.graph``), so ``foreach`` and ``matrix``
    stages expand from the params file as it is now. Ties keep ``dvc.yaml``'s order.
    """
    import networkx as nx
    from dvc.repo import Repo
    from dvc.stage import PipelineStage

    root = root.resolve()
    with warnings.catch_warnings(), Repo(str(root)) as repo:
        warnings.simplefilter("ignore", DeprecationWarning)  # DVC's own, about its trie library
        index = repo.index
        stages = [s for s in index.stages if isinstance(s, PipelineStage)]
        names = {s: _address(s, root) for s in stages}
        position = {s: i for i, s in enumerate(stages)}
        # DVC's edges point from a stage to the stages it depends on.
        graph = index.graph.subgraph(stages).reverse(copy=True)
        order = nx.lexicographical_topological_sort(graph, key=lambda s: position[s])
        return [
            Stage(
                name=names[stage],
                cmd=stage.cmd if isinstance(stage.cmd, str) else " && ".join(stage.cmd),
                upstream=tuple(
                    names[u] for u in sorted(graph.predecessors(stage), key=position.__getitem__)
                ),
                records=tuple(
                    os.path.relpath(out.fs_path, root)
                    for out in stage.outs
                    if not out.use_cache and (out.metric or out.plot)
                ),
            )
            for stage in order
        ]


def import_dvc() -> None:
    """Import DVC's repository code now (about a second) rather than in :func:`stage_graph`."""
    import dvc.repo  # noqa: F401


# --------------------------------------------------------------------------- commands


def dvc_executable() -> str:
    """The ``dvc`` beside the running interpreter (a worker may not have the venv on PATH)."""
    beside = Path(sys.executable).parent / "dvc"
    if beside.is_file():
        return str(beside)
    found = shutil.which("dvc")
    if found is None:
        raise DvcError("dvc is not installed: install the project (make venv)")
    return found


def command_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a DVC command: this one, unbuffered output (lines arrive as they are
    printed), the interpreter's bin folder first on PATH (the stages call ``complex-ner``)."""
    env = {**os.environ, **(extra or {})}
    env["PYTHONUNBUFFERED"] = "1"
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    return env


def _stop(proc: subprocess.Popen[str]) -> None:
    """Interrupt the command's whole process group (DVC and the stage command), then kill it."""
    for sig in (signal.SIGINT, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=STOP_GRACE_S)
            return
        except subprocess.TimeoutExpired:
            continue


def stream(
    args: Sequence[str],
    cwd: Path,
    log: Log,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> list[str]:
    """Run ``args`` in ``cwd``, pass each output line (stdout and stderr, in order) to ``log``
    as it arrives; return the last :data:`TAIL_LINES` lines.

    The command runs in its own process group: a timeout, an exception or an interrupt in the
    caller stops the command and everything it started.

    Raises:
        DvcLockError: it failed on a lock held by another DVC process.
        DvcTimeoutError: it ran longer than ``timeout`` seconds.
        DvcError: any other non-zero exit.
    """
    child_env = command_env(env)
    secrets = secret_values(child_env)  # the stage's output may print them (MLflow run links)
    proc = subprocess.Popen(
        list(args),
        cwd=cwd,
        env=child_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        bufsize=1,
        start_new_session=True,
    )
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    timed_out = threading.Event()

    def expire() -> None:
        timed_out.set()
        _stop(proc)

    timer = threading.Timer(timeout, expire) if timeout else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            # A progress bar redraws with carriage returns: each redraw is a line of its own.
            for part in line.rstrip("\n").split("\r"):
                if part.strip():
                    part = redact(part, secrets)
                    tail.append(part)
                    log(part)
        proc.wait()
    except BaseException:
        _stop(proc)
        raise
    finally:
        if timer is not None:
            timer.cancel()
    shown = " ".join(args[1:])
    if timed_out.is_set():
        raise DvcTimeoutError(f"dvc {shown}: stopped after {timeout:.0f} s\n" + "\n".join(tail))
    if proc.returncode != 0:
        text = "\n".join(tail)
        kind = DvcLockError if any(m in text for m in LOCK_MESSAGES) else DvcError
        raise kind(f"dvc {shown} failed (exit {proc.returncode}):\n{text}")
    return list(tail)


def run_stage(
    root: Path,
    name: str,
    log: Log,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> StageRun:
    """``dvc repro --single-item <name>``: DVC skips the stage when it is up to date, restores
    it from its run cache when it ran before with the same inputs, or runs its command; then it
    caches the outputs and records the stage in ``dvc.lock``.

    Raises:
        DvcError: the stage failed (see :func:`stream`).
    """
    start = time.perf_counter()
    lines: list[str] = []

    def keep(line: str) -> None:
        lines.append(line)
        if line != PUSH_HINT:
            log(line)

    args = [dvc_executable(), "--wait-for-lock", "repro", "--single-item", name]
    stream(args, root, keep, env, timeout)
    if any(line.startswith(f"Running stage '{name}'") for line in lines):
        status = "ran"
    elif any(f"Stage '{name}' is cached" in line for line in lines):
        status = "restored"
    else:
        status = "skipped"
    return StageRun(name, status, round(time.perf_counter() - start, 1))


def _quiet(args: Sequence[str], root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), cwd=root, env=command_env(), capture_output=True, text=True, check=False
    )


def default_remote(root: Path) -> str | None:
    """The project's default DVC remote, or None when none is set."""
    done = _quiet([dvc_executable(), "remote", "default"], root)
    name = done.stdout.strip()
    return name if done.returncode == 0 and name else None


def push(root: Path, log: Log) -> bool:
    """``dvc push`` to the default remote; False (nothing pushed) when there is none."""
    if default_remote(root) is None:
        log("no default DVC remote: nothing pushed")
        return False
    stream([dvc_executable(), "--wait-for-lock", "push"], root, log)
    return True


# --------------------------------------------------------------------------- experiments


def has_commit(root: Path) -> bool:
    """Whether ``root`` is in a git repository with a commit (DVC experiments need one)."""
    done = _quiet(["git", "rev-parse", "--verify", "--quiet", "HEAD"], root)
    return done.returncode == 0


def valid_experiment_name(root: Path, name: str) -> bool:
    """Whether git accepts ``name`` in an experiment's ref (DVC stores experiments as refs)."""
    done = _quiet(["git", "check-ref-format", f"refs/exps/{name}"], root)
    return done.returncode == 0 and "/" not in name


def experiment_names(root: Path) -> set[str]:
    """The experiments saved on the current commit."""
    done = _quiet([dvc_executable(), "exp", "list", "--names-only"], root)
    if done.returncode != 0:
        raise DvcError(f"dvc exp list failed:\n{done.stdout}{done.stderr}")
    return {line.strip() for line in done.stdout.splitlines() if line.strip()}


def save_experiment(
    root: Path, name: str, stages: Sequence[str], log: Log, include: Sequence[str] = ()
) -> None:
    """``dvc exp save --name <name> <stages>``: record the workspace (params, ``dvc.lock``, the
    outputs' hashes) as an experiment on the current commit; the workspace is left as it is.

    ``dvc exp save`` force-commits the outputs of the stages it is given (all of them without
    targets), so give it only stages that ``dvc repro`` just brought up to date: for them the
    commit changes nothing, and no stage gets recorded with outputs its params did not make.

    Args:
        stages: The stages the run reproduced.
        include: Paths saved even if git does not track them yet (e.g. a new ``dvc.lock``).
    """
    if not stages:
        raise DvcError(f"experiment {name!r}: no stages to save")
    args = [dvc_executable(), "--wait-for-lock", "exp", "save", "--name", name]
    for path in include:
        if (root / path).exists():
            args += ["--include-untracked", path]
    stream([*args, *stages], root, log)


# --------------------------------------------------------------------------- params


def set_params(path: Path, values: Sequence[tuple[Sequence[str], Any]]) -> None:
    """Write values into a YAML params file, keeping its comments and layout (what
    ``dvc exp run --set-param`` does). Lists are written in flow style, ``[a, b]``. A
    ``train.<key>`` value also replaces that key's ``train.by_language`` entries, as in
    :func:`complex_ner.core.config.load_params`.

    Args:
        values: (key path, value) pairs, e.g. ``(["train", "epochs"], 1)``.
    """
    from io import StringIO

    import yaml as pyyaml
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap

    ruamel = YAML()  # round trip: comments, key order and quoting survive
    ruamel.width = 100
    data = ruamel.load(path.read_text(encoding="utf-8")) or CommentedMap()
    for keys, value in values:
        node = data
        for key in keys[:-1]:
            if node.get(key) is None:
                node[key] = CommentedMap()
            node = node[key]
        # Spelled as PyYAML writes it (YAML 1.1, which the project reads with): 1.0e-07, not
        # ruamel's 1e-07, which YAML 1.1 reads as a string.
        text = pyyaml.safe_dump(value, default_flow_style=True, width=10**6)
        node[keys[-1]] = ruamel.load(text)
        drop_language_changes(data, keys)
    out = StringIO()
    ruamel.dump(data, out)
    atomic_write_text(path, out.getvalue())


@contextmanager
def exclusive(root: Path, what: str) -> Iterator[None]:
    """Hold a lock file under ``.dvc/tmp`` so that one ``what`` runs at a time in ``root``.

    Raises:
        DvcError: another process holds it.
    """
    import fcntl

    lock_dir = root / ".dvc" / "tmp"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"complex-ner-{what}.lock", "w", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DvcError(f"another {what} is running in {root}; wait for it to finish") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
