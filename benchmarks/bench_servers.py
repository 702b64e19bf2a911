"""Start-up times of the team set-up's servers: PostgreSQL, MLflow on it, Prefect.

Each repeat, in a fresh temporary folder: ``initdb`` and ``pg_ctl start`` of a cluster on
127.0.0.1 (``complex_ner.adapters.mlflow_server``, as ``make mlflow-server``), ``mlflow server``
on the empty database until ``/health`` answers (it creates its tables: the first start), the
same server again on the now-filled database (every later start), and ``prefect server start``
with a fresh SQLite home until its ``/api/health`` answers. Median and range over ``--repeats``.

    python -m benchmarks.bench_servers [--repeats 3] [--json PATH]
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness import base_parser, child_env, emit, parse, result
from complex_ner.adapters.mlflow_server import (
    SERVER_LOG,
    free_port,
    init_cluster,
    local_cluster,
    mlflow_server,
    running,
)

BIN = Path(sys.executable).parent


def _prefect_start(home: Path) -> float:
    port = free_port()
    env = child_env(PREFECT_HOME=str(home), PREFECT_UI_ENABLED="false")
    env.pop("PREFECT_API_URL", None)
    command = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}/api"
    with running(command, url, env=env, timeout=300, stop_signal=signal.SIGINT) as (_, seconds):
        return seconds


def once() -> dict[str, float]:
    """One of each start, in a fresh folder (searchable by ``postgres`` when run as root)."""
    folder = Path(tempfile.mkdtemp(prefix="bench-servers-"))
    folder.chmod(0o755)
    times: dict[str, float] = {}
    try:
        start = time.perf_counter()
        init_cluster(folder / "pg")
        times["initdb"] = time.perf_counter() - start
        start = time.perf_counter()
        with local_cluster(folder / "pg", free_port()) as cluster:
            times["pg_ctl start + createdb"] = time.perf_counter() - start
            for label in ("mlflow server, empty database", "mlflow server, existing database"):
                start = time.perf_counter()
                with mlflow_server(
                    cluster.uri(), str(folder / "artifacts"), free_port(), folder / SERVER_LOG
                ):
                    times[label] = time.perf_counter() - start
        times["prefect server start, fresh home"] = _prefect_start(folder / "prefect")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return times


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = base_parser("servers", __doc__, threads=None)
    args = parse(parser, argv)
    repeats = 1 if args.quick else (args.repeats or 3)
    runs = [once() for _ in range(repeats)]
    rows = []
    for label in runs[0]:
        values = [r[label] for r in runs]
        rows.append([label, statistics.median(values), min(values), max(values), repeats])
    record = result(
        args,
        "Server start-up (seconds until healthy)",
        ["step", "median s", "min s", "max s", "runs"],
        rows,
        notes=[f"load average before: {os.getloadavg()[0]:.1f} (1 min)"],
    )
    return emit(record, args.json)


if __name__ == "__main__":
    main()
