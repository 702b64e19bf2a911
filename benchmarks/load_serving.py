"""The served model under load: concurrent clients send a mix of valid and invalid requests.

    python -m benchmarks.load_serving --model models:/complex-ner-es@champion   # starts a server
    python -m benchmarks.load_serving --url http://127.0.0.1:5001               # a running one
    python -m benchmarks.load_serving --tagger-dir FOLDER   # registers FOLDER in a scratch store
    python -m benchmarks.load_serving --clients 50 --requests 20 --json out.json
    python -m benchmarks.load_serving --guarded ...     # complex-ner serve instead

Each client keeps one HTTP/1.1 connection and sends ``--requests`` requests drawn (seeded) from
:data:`BODIES`: good rows of text and tokens, blank text, mixed scripts and emoji, a request
at the row limit, and bad ones (over the limits, non-strings, nested JSON, malformed JSON, bytes
that are not UTF-8, wrong content types). Every answer is checked against the status its body
must get; a connection that fails is counted as dropped (and reopened). Prints latency
percentiles, throughput and the statuses; docs/reliability.md holds the figures.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.harness import machine_info, machine_line, md_table, write_json
from complex_ner.adapters.serving import LIMITS

JSON = "application/json"
_SENTENCES = (
    "ana vive en lima y escucha soda stereo",
    "Luis vive en Quito",
    "el museo del prado está en madrid .",
    "我在北京看了《红楼梦》",
    "marta 😀 vive en Москва y القاهرة",
)


def _records(*rows: dict[str, Any]) -> bytes:
    return json.dumps({"dataframe_records": list(rows)}).encode()


def _words(n: int) -> str:
    """``n`` characters of Spanish words (an entity every few words)."""
    return ("ana vive en lima y escucha soda stereo " * (n // 10 + 1))[:n]


#: Rows of the longest allowed text that fill a request up to its character limit.
_FULL_ROWS = LIMITS.max_total_chars // LIMITS.max_chars


@dataclass(frozen=True)
class Body:
    """One kind of request and the status it must get."""

    name: str
    body: bytes
    content_type: str | None
    expect: int


BODIES: tuple[Body, ...] = (
    Body("text", _records({"text": _SENTENCES[0]}), JSON, 200),
    Body("text, 8 rows", _records(*({"text": s} for s in _SENTENCES + _SENTENCES[:3])), JSON, 200),
    Body("tokens", _records({"tokens": ["marta", "vive", "en", "quito"]}), JSON, 200),
    Body(
        "dataframe_split",
        json.dumps({"dataframe_split": {"columns": ["text"], "data": [["ana en lima"]]}}).encode(),
        JSON,
        200,
    ),
    Body("blank text", _records({"text": ""}, {"text": " \t "}), JSON, 200),
    Body(
        "mixed scripts, emoji, controls",
        _records({"text": _SENTENCES[4] + "\x00\u202e"}),
        JSON,
        200,
    ),
    Body("rows at the limit", _records(*[{"text": "hola"}] * LIMITS.max_rows), JSON, 200),
    Body(
        "characters in all at the limit",
        _records(*[{"text": _words(LIMITS.max_chars)}] * _FULL_ROWS),
        JSON,
        200,
    ),
    Body(
        "characters at the limit",
        _records({"text": _words(LIMITS.max_chars)}),
        f"{JSON}; charset=utf-8",
        200,
    ),
    Body("rows over the limit", _records(*[{"text": "hola"}] * (LIMITS.max_rows + 1)), JSON, 400),
    Body("characters over the limit", _records({"text": "a" * (LIMITS.max_chars + 1)}), JSON, 400),
    Body(
        "characters in all over the limit",
        _records(*[{"text": "a" * LIMITS.max_chars}] * (_FULL_ROWS + 1)),
        JSON,
        400,
    ),
    Body("100k characters", _records({"text": "ana " * 25_000}), JSON, 400),
    Body("non-string text", _records({"text": 42}), JSON, 400),
    Body("nested JSON", _records({"text": {"a": [1, {"b": [None, 2.5]}]}}), JSON, 400),
    Body("tokens as a string", _records({"tokens": "marta vive"}), JSON, 400),
    Body("lone surrogate", b'{"dataframe_records": [{"text": "a\\ud800b"}]}', JSON, 400),
    Body(
        "batch_size 0",
        json.dumps({"dataframe_records": [{"text": "hola"}], "params": {"batch_size": 0}}).encode(),
        JSON,
        400,
    ),
    Body("malformed JSON", b'{"dataframe_records": [{"text": "hola"', JSON, 400),
    Body("not UTF-8", b'{"dataframe_records": [{"text": "\xff\xfe"}]}', JSON, 400),
    Body("a JSON list", b'[{"text": "hola"}]', JSON, 400),
    Body("unknown key", b'{"rows": [{"text": "hola"}]}', JSON, 400),
    Body("empty body", b"", JSON, 400),
    Body("text/plain", b"ana vive en lima", "text/plain", 415),
    Body("charset latin-1", _records({"text": "hola"}), f"{JSON}; charset=latin-1", 415),
)


@dataclass
class LoadResult:
    """What the clients saw."""

    requests: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    dropped: int = 0
    unexpected: list[tuple[str, int | str]] = field(default_factory=list)
    by_body: Counter[str] = field(default_factory=Counter)

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def percentile(self, q: float) -> float:
        data = sorted(self.latencies_ms)
        return data[min(len(data) - 1, int(q * len(data)))] if data else float("nan")


def run_load(
    url: str,
    clients: int = 50,
    requests: int = 20,
    bodies: Sequence[Body] = BODIES,
    seed: int = 0,
    timeout: float = 120.0,
) -> LoadResult:
    """``clients`` threads, each sending ``requests`` seeded picks of ``bodies`` to ``url``."""
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    result = LoadResult()
    lock = threading.Lock()
    start_line = threading.Barrier(clients)

    def client(index: int) -> None:
        rng = random.Random(f"{seed}-{index}")
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
        start_line.wait()
        for _ in range(requests):
            body = rng.choice(bodies)
            headers = {"Content-Type": body.content_type} if body.content_type else {}
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/invocations", body=body.body, headers=headers)
                response = conn.getresponse()
                response.read()
                status: int | str = response.status
            except (OSError, http.client.HTTPException) as exc:
                status = f"dropped: {type(exc).__name__}"
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
            elapsed = (time.perf_counter() - t0) * 1000
            with lock:
                result.requests += 1
                result.by_body[body.name] += 1
                if isinstance(status, str):
                    result.dropped += 1
                else:
                    result.statuses[status] += 1
                    result.latencies_ms.append(elapsed)
                if status != body.expect:
                    result.unexpected.append((body.name, status))
        conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.seconds = time.perf_counter() - t0
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, seconds: float = 180.0, path: str = "/ping") -> None:
    """Wait until ``url`` answers ``path`` (the scoring server's ``/ping``, the tracking
    server's ``/health``)."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}{path}", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer {path} within {seconds:.0f} s")


@contextmanager
def served(
    model_uri: str, tracking_uri: str | None = None, port: int = 0, guarded: bool = False
) -> Iterator[str]:
    """``mlflow models serve`` of ``model_uri`` on 127.0.0.1 (loopback only), or with
    ``guarded`` ``complex-ner serve``; yields its URL."""
    port = port or free_port()
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    if guarded:
        argv = [
            str(bin_dir / "complex-ner"),
            "serve",
            "-m",
            model_uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "-p",
            "no-params.yaml",
        ]
    else:
        argv = [
            str(bin_dir / "mlflow"),
            "models",
            "serve",
            "-m",
            model_uri,
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ]
    server = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:  # uvicorn waits for requests still running
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)


def register_champion(root: Path, tagger_dir: Path) -> str:
    """Make ``root`` a project whose registry holds ``tagger_dir`` (a tagger folder with its
    ONNX export) as ``complex-ner-es@champion``; returns its tracking URI."""
    from complex_ner.adapters.registry import register_version, set_alias
    from complex_ner.adapters.tracking import start_run
    from complex_ner.core.config import load_params
    from complex_ner.core.paths import CHAMPION

    (root / "params.yaml").write_text("{}\n", encoding="utf-8")
    params = load_params(root / "params.yaml")
    previous = os.environ.pop("MLFLOW_TRACKING_URI", None)  # this project's own store
    try:
        with start_run(params, "serving", {}) as run:
            info = run.log_pyfunc(tagger_dir)
        set_alias(params, "es", CHAMPION, register_version(params, "es", info.model_uri, {}))
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)  # mlflow.set_tracking_uri exported it
        if previous is not None:
            os.environ["MLFLOW_TRACKING_URI"] = previous
    return f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"


def time_request(url: str, body: Body, repeat: int = 3) -> float:
    """The fastest of ``repeat`` sequential sends of ``body``, in ms.

    Raises:
        RuntimeError: a status other than the body's (504: past the server's timeout).
    """
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    best = float("inf")
    for _ in range(repeat):
        conn = http.client.HTTPConnection(host, int(port), timeout=300)
        t0 = time.perf_counter()
        conn.request("POST", "/invocations", body=body.body, headers={"Content-Type": JSON})
        response = conn.getresponse()
        response.read()
        best = min(best, (time.perf_counter() - t0) * 1000)
        conn.close()
        if response.status != body.expect:
            raise RuntimeError(f"{body.name}: status {response.status}, expected {body.expect}")
    return best


#: The most one request may ask for: rows at the character limit, up to the request's.
WORST_CASE = next(b for b in BODIES if b.name == "characters in all at the limit")


def report(result: LoadResult, clients: int, requests: int) -> dict[str, Any]:
    """The figures as a JSON-ready dict."""
    return {
        "clients": clients,
        "requests_per_client": requests,
        "requests": result.requests,
        "seconds": round(result.seconds, 2),
        "throughput_rps": round(result.requests / result.seconds, 1) if result.seconds else None,
        "p50_ms": round(result.percentile(0.50), 1),
        "p99_ms": round(result.percentile(0.99), 1),
        "max_ms": round(max(result.latencies_ms, default=float("nan")), 1),
        "statuses": {str(k): v for k, v in sorted(result.statuses.items())},
        "server_errors": result.server_errors,
        "dropped": result.dropped,
        "unexpected": Counter(f"{n}: {s}" for n, s in result.unexpected),
        "by_body": dict(result.by_body),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--url", help="A running server (http://127.0.0.1:PORT).")
    where.add_argument("--model", default="models:/complex-ner-es@champion", help="Serve this.")
    where.add_argument("--tagger-dir", type=Path, help="Register this folder, then serve it.")
    parser.add_argument("--tracking-uri", help="MLFLOW_TRACKING_URI for --model.")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=20, help="Requests per client.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    parser.add_argument("--no-worst-case", action="store_true", help="Skip timing WORST_CASE.")
    parser.add_argument(
        "--guarded", action="store_true", help="Serve with complex-ner serve, not mlflow's."
    )
    args = parser.parse_args(argv)

    def measure(url: str) -> tuple[LoadResult, float | str | None]:
        result = run_load(url, args.clients, args.requests, seed=args.seed)
        if args.no_worst_case:
            return result, None
        try:
            return result, time_request(url, WORST_CASE)
        except RuntimeError as exc:
            return result, str(exc)

    if args.url:
        result, worst = measure(args.url)
    elif args.tagger_dir:
        with tempfile.TemporaryDirectory(prefix="load-serving-") as tmp:
            uri = register_champion(Path(tmp), args.tagger_dir.resolve())
            with served("models:/complex-ner-es@champion", uri, guarded=args.guarded) as url:
                result, worst = measure(url)
    else:
        with served(args.model, args.tracking_uri, guarded=args.guarded) as url:
            result, worst = measure(url)
    figures = report(result, args.clients, args.requests)
    figures["worst_case_request_ms"] = round(worst, 1) if isinstance(worst, float) else worst
    figures["model"] = args.url or str(args.tagger_dir or args.model)
    figures["server"] = "complex-ner serve" if args.guarded else "mlflow models serve"
    figures["machine"] = machine_info()
    print(machine_line(figures["machine"]))
    print(
        md_table(
            [
                "clients x requests",
                "requests",
                "seconds",
                "req/s",
                "p50 ms",
                "p99 ms",
                "max ms",
                "5xx",
                "dropped",
                "unexpected status",
            ],
            [
                [
                    f"{args.clients} x {args.requests}",
                    figures["requests"],
                    figures["seconds"],
                    figures["throughput_rps"],
                    figures["p50_ms"],
                    figures["p99_ms"],
                    figures["max_ms"],
                    figures["server_errors"],
                    figures["dropped"],
                    sum(figures["unexpected"].values()),
                ]
            ],
        )
    )
    print("statuses:", figures["statuses"])
    if worst is not None:
        shown = f"{worst:,.0f} ms" if isinstance(worst, float) else worst
        print(f"{WORST_CASE.name} ({LIMITS.max_total_chars:,} characters): {shown}")
    if figures["unexpected"]:
        print("unexpected:", dict(figures["unexpected"]))
    if args.json:
        write_json(args.json, figures)
    return figures


if __name__ == "__main__":
    main()
