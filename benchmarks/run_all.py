"""Run every benchmark and print one combined table; also the helpers the scripts share.

Usage::

    .venv/bin/python benchmarks/run_all.py            # full run (about 16 minutes on 2 cores)
    .venv/bin/python benchmarks/run_all.py --quick    # tiny shapes and a tiny random BERT
    .venv/bin/python benchmarks/run_all.py --only crf coldstart --json reports/bench.json

Each benchmark runs in its own Python process (``python -m benchmarks.bench_<name>``), so peak
memory, thread settings and imported modules of one never leak into another. Each script prints
its own markdown table; this one then prints a summary table of the headline numbers against
their targets.

The helpers below (table rendering, timing, machine description, peak RSS sampling, data
loading) are shared by the ``bench_*`` scripts, which keeps each of them a single file plus this
one. Importing this module is cheap: nothing heavy is imported at module level.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ENCODER = ROOT / "models" / "encoders" / "multilingual-e5-small"
BENCHMARKS = ("crf", "inference", "roofline", "coldstart", "training", "trim", "overhead")

for _k, _v in (
    ("HF_HUB_OFFLINE", "1"),
    ("TRANSFORMERS_OFFLINE", "1"),
    ("TOKENIZERS_PARALLELISM", "false"),
    ("GX_ANALYTICS_ENABLED", "false"),
    ("MLFLOW_DISABLE_TELEMETRY", "true"),
):
    os.environ.setdefault(_k, _v)


# --------------------------------------------------------------------------- tables and output


def fmt(value: Any) -> str:
    """One table cell: floats with 3 significant-ish digits, None as a dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:  # NaN
            return "—"
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
    """A GitHub markdown table."""
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"row has {len(row)} cells for {len(columns)} columns: {row}")
        lines.append("| " + " | ".join(fmt(cell) for cell in row) + " |")
    return "\n".join(lines)


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny fast run (smoke test)")
    parser.add_argument("--json", type=Path, default=None, help="write the numbers here")
    parser.add_argument(
        "--devices",
        choices=("all", "cpu", "cuda"),
        default="all",
        help="all: the CPU, plus CUDA when present; cuda: only the GPU rows",
    )
    return parser


def bench_devices(choice: str = "all") -> list[str]:
    """The devices a benchmark measures for ``--devices choice``.

    Raises:
        SystemExit: ``cuda`` was asked for and no CUDA GPU is present.
    """
    if choice == "cpu":
        return ["cpu"]
    if choice == "cuda":
        if not cuda_available():
            raise SystemExit("--devices cuda: no CUDA GPU is present")
        return ["cuda"]
    return ["cpu"] + (["cuda"] if cuda_available() else [])


def make_result(
    benchmark: str,
    title: str,
    command: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    summary: Sequence[dict[str, Any]] = (),
    notes: Sequence[str] = (),
    machine: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The dict every benchmark's ``main`` returns (and writes with ``--json``)."""
    return {
        "benchmark": benchmark,
        "title": title,
        "command": command,
        "machine": machine if machine is not None else machine_info(),
        "columns": list(columns),
        "rows": [list(r) for r in rows],
        "table": md_table(columns, rows),
        "summary": list(summary),
        "notes": list(notes),
        **extra,
    }


def emit(result: dict[str, Any], json_path: Path | None) -> dict[str, Any]:
    """Print the table (and notes) and write the JSON file when asked."""
    print(f"\n### {result['title']}\n")
    print(machine_line(result["machine"]))
    print()
    print(result["table"])
    if result["notes"]:
        print()
        for note in result["notes"]:
            print(f"- {note}")
    sys.stdout.flush()
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    return result


def target(metric: str, value: Any, goal: str, met: bool | None) -> dict[str, Any]:
    """One summary row: a headline number, its target and whether it was met."""
    return {"metric": metric, "value": value, "target": goal, "met": met}


# --------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def machine_info() -> dict[str, Any]:
    """CPU, cores, load, GPU, library versions and the date (UTC)."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    import transformers

    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg_1_5_15": load,
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "date_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def machine_line(info: dict[str, Any]) -> str:
    gpu = info.get("gpu") or "no CUDA GPU (GPU/bf16 rows skipped; the code path runs on CUDA)"
    return (
        f"_Machine: {info['cpu']}, {info['cores']} cores, load average {info['loadavg_1_5_15']}, "
        f"{gpu}; torch {info['torch']}, transformers {info['transformers']}, "
        f"Python {info['python']}; {info['date_utc']}._"
    )


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


# --------------------------------------------------------------------------- timing and memory


def time_calls(
    fn: Callable[[], Any],
    repeats: int = 50,
    warmup: int = 3,
    budget_s: float = 5.0,
    min_repeats: int = 5,
    sync: Callable[[], None] | None = None,
    check: Callable[[Any], None] | None = None,
) -> tuple[float, int]:
    """Median wall time (seconds) of ``fn()`` and how many timed calls it took.

    Stops early after ``budget_s`` seconds of timed calls (but not before ``min_repeats``), so a
    pathologically slow configuration (e.g. oversubscribed threads) cannot stall a run.
    ``check`` sees every timed call's output, outside the timed region.
    """
    for _ in range(warmup):
        fn()
    times: list[float] = []
    spent = 0.0
    while len(times) < repeats and (len(times) < min_repeats or spent < budget_s):
        if sync is not None:
            sync()
        start = time.perf_counter()
        out = fn()
        if sync is not None:
            sync()
        elapsed = time.perf_counter() - start
        times.append(elapsed)
        spent += elapsed
        if check is not None:
            check(out)
    return statistics.median(times), len(times)


def rss_mb() -> float:
    """Current resident set size of this process in MiB."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:  # pragma: no cover - psutil is in the locked environment
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (getrusage), in MiB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS, so RSS baselines are comparable."""
    import ctypes

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakRSS:
    """Sample this process's RSS in a background thread; ``peak`` and ``baseline`` in MiB.

    ``pause()`` stops counting (e.g. when a training loop hands over to evaluation).
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
        if not self._paused.is_set():
            self.peak = max(self.peak, rss_mb())
        self._paused.set()

    @property
    def delta(self) -> float:
        return self.peak - self.baseline

    def __enter__(self) -> PeakRSS:
        self.baseline = self.peak = rss_mb()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.pause()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


# --------------------------------------------------------------------------- data and models


def es_train_path() -> Path:
    """The Spanish training file named by params.yaml (or $COMPLEX_NER_DATA_SOURCE)."""
    from complex_ner.core.config import load_params

    return load_params(ROOT / "params.yaml").source_dir / "es" / "train.conll"


_NAMES = ["ana", "luis", "marta", "pedro", "sofía"]
_PLACES = ["lima", "quito", "madrid", "bogotá", "cusco"]
_BANDS = ["the beatles", "los prisioneros", "soda stereo"]


def toy_sentences(n: int, offset: int = 0) -> list[Any]:
    """Labelled synthetic Spanish sentences of varied length (when the real data is absent)."""
    from complex_ner.domain.data import Sentence

    out = []
    for k in range(offset, offset + n):
        name, place, band = _NAMES[k % 5], _PLACES[(k * 2) % 5], _BANDS[k % 3].split()
        filler = ["y", "luego", "fue", "a", "la", "casa", "de", "su", "madre"][: k % 10]
        tokens = [name, "vive", "en", place, *filler, "y", "escucha", *band, "."]
        tags = ["B-PER", "O", "O", "B-LOC"] + ["O"] * (len(filler) + 2)
        tags += ["B-GRP"] + ["I-GRP"] * (len(band) - 1) + ["O"]
        out.append(Sentence(id=f"toy{k}", tokens=tuple(tokens), tags=tuple(tags)))
    return out


def load_sentences(n: int, offset: int = 0, allow_toy: bool = False) -> tuple[list[Any], str]:
    """``n`` labelled Spanish sentences from ``offset`` of es/train.conll, and where they came
    from. With ``allow_toy`` a missing file falls back to :func:`toy_sentences`.

    The file is streamed (``iter_conll``) and only read up to the last sentence needed.
    """
    import itertools

    from complex_ner.core.config import load_params
    from complex_ner.domain.data import iter_conll

    path = es_train_path()
    if not path.is_file():
        if allow_toy:
            return toy_sentences(n, offset), "synthetic toy sentences (es/train.conll not found)"
        raise FileNotFoundError(f"{path}: MultiCoNER Spanish training file not found")
    tags = load_params(ROOT / "params.yaml").data.tags
    picked = list(itertools.islice(iter_conll(path, tagset=tags), offset, offset + n))
    if len(picked) < n:
        raise ValueError(f"{path} has fewer than {offset + n} sentences")
    return picked, f"{path.resolve()}, sentences {offset}..{offset + n - 1}"


def tag_set() -> tuple[str, ...]:
    from complex_ner.core.config import DataConfig

    return DataConfig().tags


def entity_types() -> tuple[str, ...]:
    from complex_ner.core.config import DataConfig

    return tuple(DataConfig().entity_types)


def tiny_encoder(folder: Path) -> Path:
    """A tiny random BERT (hidden 32, 2 layers) with the real MiniLM tokenizer, for --quick."""
    from complex_ner.domain.encoders import minilm_dir, tiny_random_bert

    folder = Path(folder)
    if (folder / "config.json").is_file():
        return folder
    return tiny_random_bert(minilm_dir(), folder, hidden=32)


def default_encoder() -> Path:
    """The provisioned multilingual-e5-small folder (provisioned on first use if missing)."""
    if not (DEFAULT_ENCODER / "model.safetensors").is_file():
        from complex_ner.domain.encoders import provision_default_encoder

        provision_default_encoder(DEFAULT_ENCODER)
    return DEFAULT_ENCODER


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[int]:
    """Temporarily set torch's intra-op threads (None: leave the default)."""
    import torch

    before = torch.get_num_threads()
    if n is not None and n > 0:
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- run them all


def _run_child(name: str, quick: bool, json_path: Path, extra: Sequence[str]) -> int:
    cmd = [sys.executable, "-m", f"benchmarks.bench_{name}", "--json", str(json_path)]
    if quick:
        cmd.append("--quick")
    cmd += list(extra)
    print(f"\n$ {' '.join(cmd[1:])}", flush=True)
    return subprocess.run(cmd, cwd=ROOT, check=False).returncode


def _run_in_process(name: str, quick: bool, json_path: Path, extra: list[str]) -> int:
    import importlib

    module = importlib.import_module(f"benchmarks.bench_{name}")
    argv = ["--json", str(json_path)] + (["--quick"] if quick else []) + extra
    module.main(argv)
    return 0


def combined_table(results: Sequence[dict[str, Any]]) -> str:
    rows = []
    for result in results:
        for row in result.get("summary", []):
            met = row.get("met")
            rows.append(
                [
                    result["benchmark"],
                    row["metric"],
                    row["value"],
                    row.get("target") or "—",
                    "—" if met is None else ("met" if met else "MISSED"),
                ]
            )
    return md_table(["benchmark", "metric", "value", "target", "status"], rows)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument(
        "--in-process", action="store_true", help="import and call each main (for tests)"
    )
    args = parser.parse_args(argv)
    results: list[dict[str, Any]] = []
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for name in args.only:
            path = Path(tmp) / f"{name}.json"
            extra: list[str] = []
            inference = Path(tmp) / "inference.json"
            if name == "roofline" and inference.is_file():  # set its rates against the ceiling
                extra = ["--inference-json", str(inference)]
            if args.in_process:
                code = _run_in_process(name, args.quick, path, extra)
            else:
                code = _run_child(name, args.quick, path, extra)
            if code != 0 or not path.is_file():
                failed.append(name)
                continue
            results.append(json.loads(path.read_text(encoding="utf-8")))
    table = combined_table(results)
    print("\n## Summary\n")
    if results:
        print(machine_line(results[0]["machine"]))
        print()
    if args.quick:
        print("_--quick: tiny shapes and a tiny random BERT; the numbers only show it runs._\n")
    print(table)
    if failed:
        print(f"\nFAILED: {', '.join(failed)}")
    combined = {"results": results, "failed": failed, "table": table}
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(combined, indent=2, default=str) + "\n", encoding="utf-8")
    return combined


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    outcome = main()
    sys.exit(1 if outcome["failed"] else 0)
