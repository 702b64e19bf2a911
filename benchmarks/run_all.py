"""Run every benchmark, each in its own process, and print one combined table.

    python -m benchmarks.run_all                       # all of them (what `make bench` runs)
    python -m benchmarks.run_all --quick               # smallest configurations
    python -m benchmarks.run_all --only crf coldstart --json reports/bench.json

A fresh process per benchmark keeps peak memory, thread settings and imported modules of one
from leaking into the next. Each prints its own table; this one ends with the headline numbers
against their targets. ``bench_roofline`` gets ``bench_inference``'s result when both run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness import ROOT, child_env, machine_line, md_table, write_json

BENCHMARKS = (
    "crf",
    "inference",
    "roofline",
    "coldstart",
    "training",
    "optimizer",
    "trim",
    "overhead",
)


def combined_table(results: Sequence[dict[str, Any]]) -> str:
    """The summary rows of every result, one table."""
    rows = []
    for record in results:
        for row in record.get("summary", []):
            met = row.get("met")
            status = "—" if met is None else ("met" if met else "MISSED")
            rows.append(
                [record["benchmark"], row["metric"], row["value"], row.get("target"), status]
            )
    return md_table(["benchmark", "metric", "value", "target", "status"], rows)


def _run(name: str, argv: list[str], in_process: bool) -> int:
    if in_process:
        importlib.import_module(f"benchmarks.bench_{name}").main(argv)
        return 0
    cmd = [sys.executable, "-m", f"benchmarks.bench_{name}", *argv]
    print(f"\n$ {' '.join(cmd[1:])}", flush=True)
    return subprocess.run(cmd, cwd=ROOT, env=child_env(), check=False).returncode


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smallest configurations")
    parser.add_argument("--json", type=Path, default=None, help="write all results here")
    parser.add_argument("--devices", choices=("all", "cpu", "cuda"), default="all")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument("--in-process", action="store_true", help="call each main here")
    args = parser.parse_args(argv)
    results: list[dict[str, Any]] = []
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for name in args.only:
            path = Path(tmp) / f"{name}.json"
            child = ["--json", str(path), "--devices", args.devices]
            child += ["--quick"] if args.quick else []
            inference = Path(tmp) / "inference.json"
            if name == "roofline" and inference.is_file():
                child += ["--inference-json", str(inference)]
            if _run(name, child, args.in_process) != 0 or not path.is_file():
                failed.append(name)
                continue
            results.append(json.loads(path.read_text(encoding="utf-8")))
    table = combined_table(results)
    print("\n## Summary\n")
    if results:
        print(machine_line(results[0]["machine"]) + "\n")
    print(table)
    if failed:
        print(f"\nFAILED: {', '.join(failed)}")
    combined = {"results": results, "failed": failed, "table": table}
    if args.json is not None:
        write_json(args.json, combined)
    return combined


if __name__ == "__main__":
    sys.exit(1 if main()["failed"] else 0)
