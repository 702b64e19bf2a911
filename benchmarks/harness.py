"""What every benchmark shares: options, timing, the result record, tables and output.

A script builds its options with :func:`base_parser`, times with :func:`time_calls` (warm-up,
then median and interquartile range) or :func:`timed`, returns :func:`result` and ends with
:func:`emit`, which prints the markdown table and writes the JSON atomically. Run a script as a
module from the project root: ``python -m benchmarks.bench_crf --quick``.

Importing this module does not import torch: ``run_all`` imports it in a parent that only
starts children.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as _dt
import functools
import gc
import itertools
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from complex_ner.core.config import Params, load_params
from complex_ner.core.io import atomic_write_text
from complex_ner.domain.data import Sentence, iter_conll
from complex_ner.domain.encoders import minilm_dir, provision_default_encoder, tiny_random_bert

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- options


def base_parser(
    benchmark: str, doc: str, *, threads: int | None = 1, module: str | None = None
) -> argparse.ArgumentParser:
    """The options every benchmark takes; the script adds its own.

    Args:
        benchmark: Short name (``crf`` for ``bench_crf``), the result's name.
        doc: The script's docstring; its first line is the description.
        threads: Default of ``--threads`` (torch intra-op threads, 0: torch's default), or
            None for a script without the option.
        module: The script's module in ``benchmarks`` (default ``bench_<benchmark>``).
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.set_defaults(benchmark=benchmark, module=module or f"bench_{benchmark}")
    parser.add_argument("--quick", action="store_true", help="smallest configuration (smoke)")
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    parser.add_argument(
        "--devices",
        choices=("all", "cpu", "cuda"),
        default="all",
        help="all: the CPU, plus CUDA when present; cuda: only the GPU rows",
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (script default)")
    parser.add_argument("--encoder", type=Path, default=None, help="encoder folder")
    if threads is not None:
        parser.add_argument(
            "--threads", type=int, default=threads, help="torch threads (0: torch's default)"
        )
    return parser


def add_saved_model_options(parser: argparse.ArgumentParser) -> None:
    """The options of scripts that score saved models of one language on the project's splits:
    the repeatable ``--model NAME=FOLDER`` (see :func:`model_folders`), ``--lang``,
    ``--params`` (which splits), ``--batch-size`` and ``--out`` (the JSON result)."""
    parser.add_argument("--out", dest="json", type=Path, help="write the JSON result here")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--lang", default="es")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=FOLDER",
        help="a saved model folder, optionally named (repeatable)",
    )


def model_folders(specs: Sequence[str], least: int = 1) -> list[tuple[str, Path]]:
    """``(name, folder)`` of each ``--model`` value; a bare folder is named after itself.

    Raises:
        SystemExit: Fewer than ``least`` models, or two with one name.
    """
    members = []
    for spec in specs:
        name, sep, folder = spec.partition("=")
        members.append((name, Path(folder)) if sep else (Path(spec).name, Path(spec)))
    names = [n for n, _ in members]
    if len(members) < least:
        raise SystemExit(f"--model: give at least {least} saved model folder(s)")
    if len(set(names)) != len(names):
        raise SystemExit(f"--model: names must differ, got {names}")
    return members


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv`` (None: the command line) and record the command that ran."""
    args = parser.parse_args(argv)
    given = list(sys.argv[1:] if argv is None else argv)
    args.command = shlex.join(["python", "-m", f"benchmarks.{args.module}", *given])
    return args


def bench_devices(choice: str = "all") -> list[str]:
    """The devices a benchmark measures for ``--devices choice``.

    Raises:
        SystemExit: ``cuda`` was asked for and no CUDA GPU is present.
    """
    import torch

    if choice == "cpu":
        return ["cpu"]
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--devices cuda: no CUDA GPU is present")
    if choice == "cuda":
        return ["cuda"]
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[int]:
    """Temporarily set torch's intra-op threads (None or 0: leave the default)."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child Python, with the project importable."""
    path = [str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p), **extra}


# --------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class Timing:
    """Seconds of repeated runs of one thing."""

    samples: tuple[float, ...]

    @classmethod
    def of(cls, samples: Sequence[float]) -> Timing:
        """A timing from at least one sample.

        Raises:
            ValueError: no samples.
        """
        if not samples:
            raise ValueError("a timing needs at least one sample")
        return cls(tuple(float(s) for s in samples))

    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def best(self) -> float:
        return min(self.samples)

    @property
    def quartiles(self) -> tuple[float, float]:
        """First and third quartile (both the sample itself when there is one)."""
        if self.n == 1:
            return self.samples[0], self.samples[0]
        q1, _, q3 = statistics.quantiles(self.samples, n=4, method="inclusive")
        return q1, q3

    @property
    def iqr(self) -> float:
        q1, q3 = self.quartiles
        return q3 - q1

    def as_dict(self) -> dict[str, Any]:
        return {"median": self.median, "iqr": self.iqr, "best": self.best, "n": self.n}


def timed(fn: Callable[[], Any], sync: Callable[[], None] | None = None) -> tuple[Any, float]:
    """``fn()`` and its wall seconds; ``sync`` (e.g. ``torch.cuda.synchronize``) around it."""
    if sync is not None:
        sync()
    start = time.perf_counter()
    out = fn()
    if sync is not None:
        sync()
    return out, time.perf_counter() - start


def time_calls(
    fn: Callable[[], Any],
    repeats: int,
    *,
    warmup: int = 3,
    budget_s: float = math.inf,
    min_repeats: int = 5,
    sync: Callable[[], None] | None = None,
    check: Callable[[Any], None] | None = None,
) -> Timing:
    """Time ``repeats`` calls of ``fn`` after ``warmup`` untimed ones.

    Stops early once the timed calls have taken ``budget_s`` seconds (but not before
    ``min_repeats``), so a pathologically slow configuration cannot stall a run. ``check`` sees
    every timed call's output, outside the timed region.
    """
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    while len(samples) < repeats and (len(samples) < min_repeats or sum(samples) < budget_s):
        out, seconds = timed(fn, sync)
        samples.append(seconds)
        if check is not None:
            check(out)
    return Timing.of(samples)


# --------------------------------------------------------------------------- memory


def rss_mb() -> float:
    """Resident set size of this process in MiB."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS, so RSS baselines are comparable."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakRSS:
    """Sample this process's RSS in a background thread; ``peak`` and ``baseline`` in MiB.

    Use it as a context manager, or call ``start()`` and ``stop()``; ``pause()`` stops counting
    early (e.g. when a training loop hands over to validation).
    """

    def __init__(self, interval_s: float = 0.01) -> None:
        self.interval_s = interval_s
        self.baseline = 0.0
        self.peak = 0.0
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._paused.is_set():
                self.peak = max(self.peak, rss_mb())
            time.sleep(self.interval_s)

    def pause(self) -> None:
        """Take a last sample and stop counting."""
        if not self._paused.is_set():
            self.peak = max(self.peak, rss_mb())
        self._paused.set()

    @property
    def delta(self) -> float:
        """Peak above the RSS at entry."""
        return self.peak - self.baseline

    def start(self) -> PeakRSS:
        """Take the baseline and start sampling."""
        self.baseline = self.peak = rss_mb()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Take a last sample (unless paused) and end the sampling thread."""
        self.pause()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> PeakRSS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def machine_info() -> dict[str, Any]:
    """CPU, cores, load, GPU, library versions and the date (UTC)."""
    import torch
    import transformers

    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg_1_5_15": load,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "date_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def machine_line(info: dict[str, Any]) -> str:
    """One italic line describing where a table was measured."""
    gpu = info.get("gpu") or "no CUDA GPU (GPU rows skipped)"
    return (
        f"_Machine: {info['cpu']}, {info['cores']} cores, load average {info['loadavg_1_5_15']}, "
        f"{gpu}; torch {info['torch']}, transformers {info['transformers']}, "
        f"Python {info['python']}; {info['date_utc']}._"
    )


# --------------------------------------------------------------------------- results and tables


def fmt(value: Any) -> str:
    """One table cell: about three significant digits, None and NaN as a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        magnitude = abs(value)
        if magnitude >= 100:
            return f"{value:,.0f}"
        if magnitude >= 10:
            return f"{value:.1f}"
        if magnitude >= 1:
            return f"{value:.2f}"
        if magnitude >= 0.01:
            return f"{value:.3f}"
        return f"{value:.2g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def md_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table.

    Raises:
        ValueError: a row with a different number of cells than ``columns``.
    """
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"row has {len(row)} cells for {len(columns)} columns: {row}")
        lines.append("| " + " | ".join(fmt(cell) for cell in row) + " |")
    return "\n".join(lines)


def target(metric: str, value: Any, goal: str | None = None, met: bool | None = None) -> dict:
    """One summary row: a headline number, its target and whether it was met."""
    return {"metric": metric, "value": value, "target": goal, "met": met}


def result(
    args: argparse.Namespace,
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    summary: Sequence[dict[str, Any]] = (),
    notes: Sequence[str] = (),
    machine: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The record every benchmark's ``main`` returns and :func:`emit` writes."""
    return {
        "benchmark": args.benchmark,
        "title": title,
        "command": args.command,
        "quick": args.quick,
        "machine": machine if machine is not None else machine_info(),
        "columns": list(columns),
        "rows": [list(r) for r in rows],
        "table": md_table(columns, rows),
        "summary": list(summary),
        "notes": list(notes),
        **extra,
    }


def write_json(path: Path, payload: Any) -> None:
    """Indented JSON, written atomically (numbers that JSON lacks become strings)."""
    atomic_write_text(path, json.dumps(payload, indent=2, default=str) + "\n")


def emit(record: dict[str, Any], json_path: Path | None) -> dict[str, Any]:
    """Print the table and notes; write the JSON file when asked. Returns ``record``."""
    print(f"\n### {record['title']}\n")
    print(machine_line(record["machine"]))
    if record.get("quick"):
        print("\n_--quick: the smallest configuration; the numbers only show that it runs._")
    print()
    print(record["table"])
    if record["notes"]:
        print()
        for note in record["notes"]:
            print(f"- {note}")
    sys.stdout.flush()
    if json_path is not None:
        write_json(json_path, record)
    return record


# --------------------------------------------------------------------------- data and encoders


@functools.cache
def project_params() -> Params:
    """The project's ``params.yaml``."""
    return load_params(ROOT / "params.yaml")


def tag_set() -> tuple[str, ...]:
    """The BIO tags the project trains on."""
    return tuple(project_params().data.tags)


def entity_types() -> tuple[str, ...]:
    """The entity types the project scores."""
    return tuple(project_params().data.entity_types)


def es_train_path() -> Path:
    """The Spanish training file of the data source (``$COMPLEX_NER_DATA_SOURCE`` wins)."""
    return project_params().source_dir / "es" / "train.conll"


_NAMES = ["ana", "luis", "marta", "pedro", "sofía"]
_PLACES = ["lima", "quito", "madrid", "bogotá", "cusco"]
_BANDS = ["the beatles", "los prisioneros", "soda stereo"]
_FILLER = ["y", "luego", "fue", "a", "la", "casa", "de", "su", "madre"]


def toy_sentences(n: int, offset: int = 0) -> list[Sentence]:
    """Labelled synthetic Spanish sentences of varied length (no real data needed)."""
    out = []
    for k in range(offset, offset + n):
        name, place, band = _NAMES[k % 5], _PLACES[(k * 2) % 5], _BANDS[k % 3].split()
        filler = _FILLER[: k % 10]
        tokens = [name, "vive", "en", place, *filler, "y", "escucha", *band, "."]
        tags = ["B-PER", "O", "O", "B-LOC"] + ["O"] * (len(filler) + 2)
        tags += ["B-GRP"] + ["I-GRP"] * (len(band) - 1) + ["O"]
        out.append(Sentence(id=f"toy{k}", tokens=tuple(tokens), tags=tuple(tags)))
    return out


def load_sentences(n: int, offset: int = 0, *, toy: bool = False) -> tuple[list[Sentence], str]:
    """``n`` labelled Spanish sentences from ``offset`` of es/train.conll, and where they came
    from; with ``toy``, synthetic ones instead (``--quick``: no real data needed).

    Raises:
        FileNotFoundError: the training file is missing.
        ValueError: it has fewer than ``offset + n`` sentences.
    """
    if toy:
        return toy_sentences(n, offset), f"{n} synthetic sentences"
    path = es_train_path()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: MultiCoNER Spanish training file not found")
    stream = iter_conll(path, tagset=tag_set())
    picked = list(itertools.islice(stream, offset, offset + n))
    if len(picked) < n:
        raise ValueError(f"{path}: fewer than {offset + n} sentences")
    return picked, f"{path.resolve()}, sentences {offset}..{offset + n - 1}"


def tiny_encoder(folder: Path) -> Path:
    """A tiny random BERT (hidden 32, 2 layers) with the real MiniLM tokenizer."""
    if (folder / "config.json").is_file():
        return folder
    return tiny_random_bert(minilm_dir(), folder, hidden=32)


def pick_encoder(args: argparse.Namespace, scratch: Path) -> Path:
    """``--encoder``, else a tiny random BERT under ``scratch`` for ``--quick``, else the
    project's default encoder (provisioned now if missing)."""
    if args.encoder is not None:
        return Path(args.encoder)
    if args.quick:
        return tiny_encoder(scratch / "tiny-bert")
    params = project_params()
    return provision_default_encoder(params.path(params.encoder.output_dir))


def run_python(
    code: str, *args: str, env: dict[str, str] | None = None, timeout_s: float = 600
) -> dict[str, Any]:
    """Run ``code`` in a fresh Python (``env`` added to :func:`child_env`) and parse the JSON
    object on its last output line.

    Raises:
        RuntimeError: the child failed; the message ends with its stderr.
    """
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=child_env(**(env or {})),
        timeout=timeout_s,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child Python exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
