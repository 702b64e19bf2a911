"""A shared MLflow tracking server on PostgreSQL, with proxied artifact storage.

``mlflow server`` keeps runs, metrics and the model registry in a PostgreSQL database (the
backend store) and serves artifacts itself (``--serve-artifacts``): clients upload and download
them over HTTP, so they need neither database credentials nor access to the object store behind
``--artifacts-destination`` (a folder here; ``s3://bucket/path`` for a team, see
docs/scaling.md). Without a database URI, :func:`local_cluster` creates and starts a PostgreSQL
cluster in a project folder (``initdb`` + ``pg_ctl`` from :data:`PG_BIN_ENV` or the Debian
location of PostgreSQL 15), reachable on 127.0.0.1 only. The server is a subprocess; nothing
here imports MLflow.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

#: Where PostgreSQL's server programs are (initdb, pg_ctl, createdb); default below.
PG_BIN_ENV = "COMPLEX_NER_PG_BIN"
PG_BIN_DEFAULT = "/usr/lib/postgresql/15/bin"
#: initdb refuses to run as root: a root user runs the cluster as this system user.
PG_SYSTEM_USER = "postgres"
DB_SUPERUSER = "postgres"
DB_NAME = "mlflow"
#: The server's folder in a project, and what it holds: the cluster, artifacts, the server log.
SERVER_DIR = ".mlflow-server"
CLUSTER_DIR = "postgres"
ARTIFACTS_DIR = "artifacts"
SERVER_LOG = "server.log"
JOBS_ENV = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"


class ServerError(RuntimeError):
    """PostgreSQL or the MLflow server could not be set up or did not come up."""


def pg_bin() -> Path:
    """PostgreSQL's server programs: ``$COMPLEX_NER_PG_BIN`` or :data:`PG_BIN_DEFAULT`.

    Raises:
        ServerError: no ``initdb`` there.
    """
    folder = Path(os.environ.get(PG_BIN_ENV, PG_BIN_DEFAULT))
    if not (folder / "initdb").is_file():
        raise ServerError(
            f"{folder}: no initdb (install PostgreSQL's server package or set {PG_BIN_ENV}, "
            "or pass a database URI)"
        )
    return folder


def _as_cluster_user(args: Sequence[str]) -> list[str]:
    """A PostgreSQL command as the current user, or as ``postgres`` when running as root."""
    if os.geteuid() != 0:
        return list(args)
    runuser = shutil.which("runuser")
    if runuser is None:
        raise ServerError("running as root without runuser: cannot start PostgreSQL as postgres")
    return [runuser, "-u", PG_SYSTEM_USER, "--", *args]


def _give_to_cluster_user(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, PG_SYSTEM_USER, PG_SYSTEM_USER)


def _check(args: Sequence[str], what: str, timeout: float = 120) -> str:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise ServerError(f"{what} failed ({' '.join(args)}):\n{done.stdout}{done.stderr}")
    return done.stdout


@dataclass(frozen=True)
class Cluster:
    """A running PostgreSQL cluster on 127.0.0.1."""

    data_dir: Path
    port: int
    socket_dir: Path

    def uri(self, database: str = DB_NAME) -> str:
        """The SQLAlchemy URI MLflow's ``--backend-store-uri`` takes (psycopg2 driver)."""
        return f"postgresql://{DB_SUPERUSER}@127.0.0.1:{self.port}/{database}"


def init_cluster(data_dir: Path) -> bool:
    """Create a cluster in ``data_dir`` unless one is there; whether it was created.

    Trust authentication, superuser ``postgres``: the cluster listens on the loopback interface
    only (:func:`start_cluster`), for one machine's tests and demos; a team uses a managed
    database with a password in the URI.
    """
    if (data_dir / "PG_VERSION").is_file():
        return False
    if data_dir.exists() and any(data_dir.iterdir()):
        raise ServerError(f"{data_dir}: not empty and not a PostgreSQL cluster")
    data_dir.mkdir(parents=True, exist_ok=True)
    _give_to_cluster_user(data_dir)
    if subprocess.run(_as_cluster_user(["test", "-w", str(data_dir)])).returncode != 0:
        raise ServerError(
            f"{data_dir}: the {PG_SYSTEM_USER} user cannot write here (as root, every parent "
            f"folder must be searchable by {PG_SYSTEM_USER}: chmod o+x)"
        )
    initdb = str(pg_bin() / "initdb")
    args = [initdb, "-D", str(data_dir), "-A", "trust", "-U", DB_SUPERUSER, "-E", "UTF8"]
    _check(_as_cluster_user(args), "initdb")
    return True


def start_cluster(data_dir: Path, port: int) -> Cluster:
    """Start the cluster on 127.0.0.1:``port`` (its unix socket in a private temporary folder)
    and create the ``mlflow`` database if it is missing.

    Raises:
        ServerError: PostgreSQL did not start (its log is in the message).
    """
    socket_dir = Path(tempfile.mkdtemp(prefix="pgsock-"))
    _give_to_cluster_user(socket_dir)
    log = data_dir / "postgres.log"
    options = f"-k {socket_dir} -p {port} -c listen_addresses=127.0.0.1"
    pg_ctl = str(pg_bin() / "pg_ctl")
    args = [pg_ctl, "-D", str(data_dir), "-l", str(log), "-o", options, "-w", "-t", "60", "start"]
    try:
        _check(_as_cluster_user(args), "pg_ctl start")
    except ServerError as exc:
        shutil.rmtree(socket_dir, ignore_errors=True)
        tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
        raise ServerError(f"{exc}\n{log}:\n{tail}") from None
    cluster = Cluster(data_dir, port, socket_dir)
    databases = _check(
        [
            str(pg_bin() / "psql"),
            *("-h", "127.0.0.1", "-p", str(port), "-U", DB_SUPERUSER, "-At"),
            *("-c", "SELECT datname FROM pg_database"),
        ],
        "psql",
    ).split()
    if DB_NAME not in databases:
        createdb = str(pg_bin() / "createdb")
        _check([createdb, "-h", "127.0.0.1", "-p", str(port), "-U", DB_SUPERUSER, DB_NAME], "db")
    return cluster


def stop_cluster(cluster: Cluster) -> None:
    """``pg_ctl stop`` (fast mode: open connections are closed)."""
    args = [str(pg_bin() / "pg_ctl"), "-D", str(cluster.data_dir), "-m", "fast", "-w", "stop"]
    _check(_as_cluster_user(args), "pg_ctl stop")
    shutil.rmtree(cluster.socket_dir, ignore_errors=True)


@contextmanager
def local_cluster(data_dir: Path, port: int) -> Iterator[Cluster]:
    """A cluster in ``data_dir`` (created when missing) running for the block."""
    init_cluster(data_dir)
    cluster = start_cluster(data_dir, port)
    try:
        yield cluster
    finally:
        stop_cluster(cluster)


def server_command(
    backend_uri: str,
    artifacts_destination: str,
    host: str = "127.0.0.1",
    port: int = 5000,
    workers: int = 1,
) -> list[str]:
    """``mlflow server`` on ``backend_uri`` (runs, metrics, registry) with proxied artifacts.

    Runs created through the server get ``mlflow-artifacts:/`` locations, which clients read and
    write over HTTP; the server stores them under ``artifacts_destination``.
    """
    mlflow = str(Path(sys.executable).parent / "mlflow")
    return [
        mlflow,
        "server",
        *("--backend-store-uri", backend_uri),
        "--serve-artifacts",
        *("--artifacts-destination", artifacts_destination),
        *("--host", host, "--port", str(port), "--workers", str(workers)),
    ]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen[bytes] | None, timeout: float) -> float:
    """Seconds until ``url``/health answers 200.

    Raises:
        ServerError: the process exited, or no answer within ``timeout`` seconds.
    """
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if process is not None and process.poll() is not None:
            raise ServerError(f"{url}: the server exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return time.perf_counter() - start
        except OSError:
            time.sleep(0.5)
    raise ServerError(f"{url}: not healthy after {timeout:.0f} s")


@dataclass(frozen=True)
class Server:
    """A running MLflow server: its URL (``http://host:port``), process and start-up time."""

    url: str
    process: subprocess.Popen[bytes]
    command: tuple[str, ...]
    start_seconds: float


@contextmanager
def mlflow_server(
    backend_uri: str,
    artifacts_destination: str,
    port: int,
    log_file: Path,
    host: str = "127.0.0.1",
    timeout: float = 180,
) -> Iterator[Server]:
    """An MLflow server running for the block (stopped on leaving it).

    Its output goes to ``log_file``, whose end is quoted when it fails to start.

    Raises:
        ServerError: it exited or was not healthy within ``timeout`` seconds.
    """
    command = server_command(backend_uri, artifacts_destination, host, port)
    env = dict(os.environ)
    # MLflow 3's job runner (GenAI scorers and trace jobs, which this project does not use)
    # starts seven huey consumer processes beside the server; the user's setting wins.
    env.setdefault(JOBS_ENV, "false")
    url = f"http://{host}:{port}"
    with running(command, url, log_file, env, timeout) as (process, seconds):
        yield Server(url, process, tuple(command), seconds)


@contextmanager
def running(
    command: Sequence[str],
    url: str,
    log_file: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 180,
    stop_signal: int = signal.SIGTERM,
) -> Iterator[tuple[subprocess.Popen[bytes], float]]:
    """A server process (its own process group) for the block, once ``url``/health answers:
    ``(process, seconds it took)``. Its output goes to ``log_file`` (quoted when it fails to
    start) or nowhere; on leaving, ``stop_signal`` stops it (Prefect's servers and workers
    stop on SIGINT).

    Raises:
        ServerError: it exited or was not healthy within ``timeout`` seconds.
    """
    if log_file is None:
        process = subprocess.Popen(
            list(command),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    else:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("ab") as log:
            process = subprocess.Popen(
                list(command), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
    try:
        try:
            seconds = wait_healthy(url, process, timeout)
        except ServerError as exc:
            tail = log_file.read_text(errors="replace")[-3000:] if log_file else ""
            raise ServerError(f"{exc}\n{log_file or ''}:\n{tail}") from None
        yield process, seconds
    finally:
        stop_process_group(process, sig=stop_signal)


@contextmanager
def tracking_server(
    folder: Path,
    port: int = 5000,
    host: str = "127.0.0.1",
    backend_uri: str | None = None,
    artifacts_destination: str | None = None,
    pg_port: int = 5433,
) -> Iterator[Server]:
    """The whole set-up for the block: PostgreSQL (unless ``backend_uri`` names a database) and
    the MLflow server on it, artifacts proxied to ``artifacts_destination`` (default
    ``folder/artifacts``).

    Args:
        folder: Holds the cluster (created on first use), the artifacts and ``server.log``.
        port: The MLflow server's port.
        host: Its address; 127.0.0.1 keeps it on this machine.
        backend_uri: An existing database (``postgresql://user:password@host:5432/mlflow``).
        artifacts_destination: A folder or an object store URI (``s3://bucket/path``).
        pg_port: The local cluster's port on 127.0.0.1.
    """
    folder = folder.resolve()
    artifacts = artifacts_destination or str(folder / ARTIFACTS_DIR)
    with ExitStack() as stack:
        if backend_uri is None:
            backend_uri = stack.enter_context(local_cluster(folder / CLUSTER_DIR, pg_port)).uri()
        yield stack.enter_context(
            mlflow_server(backend_uri, artifacts, port, folder / SERVER_LOG, host)
        )


def stop_process_group(
    process: subprocess.Popen[bytes], timeout: float = 30, sig: int = signal.SIGTERM
) -> None:
    """``sig`` to a server's process group (uvicorn and its workers), then SIGKILL."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout)
    except ProcessLookupError:
        pass
