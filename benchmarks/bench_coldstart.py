"""Cold start of the prediction CLI: ``complex-ner predict --model <folder> "una frase"``.

Each run is a fresh process (interpreter start, imports, model load, one sentence, JSON out),
timed from the parent; the median (IQR) of ``--repeats`` runs is reported. The model folder
holds an untrained ``bert_crf`` tagger over the encoder, saved once with ``Tagger.save`` and
exported to ONNX (``export_onnx``) into a temporary folder (nothing is trained).

One more run under ``python -X importtime`` lists what the path imports: torch, transformers,
Prefect, Great Expectations and DVC must not be among them (MLflow is reported too: a plain
model folder does not need it). A last child times the phases (imports, ``load_tagger``,
``predict_entities``) the way the CLI calls them and re-times the parts of ``load_tagger``
(``tokenizers.Tokenizer.from_file``, the onnxruntime session).

    python -m benchmarks.bench_coldstart [--quick] [--json PATH]
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    ROOT,
    Timing,
    base_parser,
    child_env,
    emit,
    machine_info,
    parse,
    pick_encoder,
    result,
    run_python,
    tag_set,
    target,
)
from complex_ner.core.config import ModelConfig
from complex_ner.domain.models.tagger import build_model
from complex_ner.engines.export import export_onnx

FORBIDDEN = ("torch", "transformers", "prefect", "great_expectations", "dvc")
WATCHED = (
    *FORBIDDEN,
    "mlflow",
    "onnxruntime",
    "pandas",
    "matplotlib",
    "sklearn",
    "scipy",
    "jieba",
    "seqeval",
)
SENTENCE = "una frase"
#: Target of the performance issue, seconds.
COLD_START_TARGET_S = 2.0
COLUMNS = ["measure", "value", "note"]

PHASES = r"""
import json, sys, time
folder, sentence = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
from complex_ner.cli import app  # noqa: F401  (what the console script imports first)
from complex_ner.engines.predict import load_tagger, predict_entities
t1 = time.perf_counter()
import onnxruntime
t2 = time.perf_counter()
tagger = load_tagger(folder, threads=1)  # what `complex-ner predict` does (--threads 1)
t3 = time.perf_counter()
predict_entities(tagger, [sentence], 64)
t4 = time.perf_counter()
predict_entities(tagger, [sentence], 64)
t5 = time.perf_counter()
modules = sorted({m.split(".")[0] for m in sys.modules})  # before the diagnostics import more
# Diagnostics, with the path's imports done: what load_tagger spends on each part.
from tokenizers import Tokenizer
Tokenizer.from_file(folder + "/tokenizer/tokenizer.json")
t6 = time.perf_counter()
options = onnxruntime.SessionOptions()
options.intra_op_num_threads = 1
onnxruntime.InferenceSession(folder + "/model.onnx", options, providers=["CPUExecutionProvider"])
t7 = time.perf_counter()
print(json.dumps({
    "imports_s": t1 - t0, "onnxruntime_s": t2 - t1, "load_s": t3 - t2, "predict_s": t4 - t3,
    "predict_again_s": t5 - t4, "warm_tokenizer_s": t6 - t5, "warm_session_s": t7 - t6,
    "modules": modules,
}))
"""


def cli_command() -> list[str]:
    """The ``complex-ner`` console script, run by this interpreter."""
    script = Path(sys.executable).parent / "complex-ner"
    found = str(script) if script.is_file() else shutil.which("complex-ner")
    if found:
        return [sys.executable, found]
    return [sys.executable, "-c", "from complex_ner.cli import app; app()"]


def run_cli(model: Path, importtime: bool = False) -> tuple[float, subprocess.CompletedProcess]:
    """Wall seconds and outcome of one ``complex-ner predict`` in a fresh process."""
    cmd = cli_command()
    if importtime:
        cmd = [cmd[0], "-X", "importtime", *cmd[1:]]
    cmd += ["predict", "--model", str(model), SENTENCE]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True)
    return time.perf_counter() - start, proc


def parse_importtime(stderr: str) -> dict[str, float]:
    """Import time (seconds) per top-level package: the self times of its modules, summed.

    Self times never overlap, so they add up to the whole import time and split it cleanly
    (cumulative times nest: ``complex_ner.domain.models.tagger`` contains all of ``torch``).
    """
    out: dict[str, float] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line[len("import time:") :].split("|")
        if len(parts) != 3:
            continue
        try:
            own = int(parts[0].strip()) / 1e6
        except ValueError:
            continue  # the header line
        root = parts[2].strip().split(".")[0]
        out[root] = out.get(root, 0.0) + own
    return out


def phase_rows(phases: dict[str, Any], model_mb: float) -> list[list[Any]]:
    """Table rows of the phases child."""
    rest = phases["load_s"] - phases["warm_tokenizer_s"] - phases["warm_session_s"]
    return [
        ["phase: import complex_ner.cli + predict", phases["imports_s"], "separate process"],
        ["phase: import onnxruntime", phases["onnxruntime_s"], "if not imported already"],
        ["phase: load_tagger (folder)", phases["load_s"], f"model folder {model_mb:.0f} MiB"],
        [
            "load_tagger part: tokenizers.Tokenizer.from_file",
            phases["warm_tokenizer_s"],
            "re-timed warm",
        ],
        [
            "load_tagger part: onnxruntime.InferenceSession (model.onnx)",
            phases["warm_session_s"],
            "re-timed warm; 1 thread",
        ],
        ["load_tagger part: the rest (spec, head, CRF scores)", rest, "difference"],
        ["phase: predict_entities, first sentence", phases["predict_s"], "1 thread"],
        ["phase: predict_entities, second sentence", phases["predict_again_s"], "1 thread"],
    ]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse(base_parser("coldstart", __doc__, threads=None), argv)
    runs = args.repeats or (1 if args.quick else 3)
    machine = machine_info()
    rows: list[list[Any]] = []
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-coldstart-") as tmp:
        encoder = pick_encoder(args, Path(tmp))
        start = time.perf_counter()
        tagger = build_model(str(encoder), tag_set(), ModelConfig(arch="bert_crf"), "es")
        model = tagger.save(Path(tmp) / "model")
        export_onnx(model, [SENTENCE.split()])
        save_s = time.perf_counter() - start
        walls: list[float] = []
        output = ""
        # --quick: the single run is the -X importtime run (its overhead is small).
        for k in range(runs):
            wall, proc = run_cli(model, importtime=args.quick)
            walls.append(wall)
            if proc.returncode != 0:
                failures.append(proc.stderr.strip()[-500:])
            output = proc.stdout.strip()
            rows.append([f"run {k + 1}: wall seconds", wall, f"exit {proc.returncode}"])
        if not args.quick:
            _, proc = run_cli(model, importtime=True)
        imports = parse_importtime(proc.stderr)
        phases = None
        if not args.quick:
            try:
                phases = run_python(PHASES, str(model), SENTENCE)
            except RuntimeError as exc:
                failures.append(str(exc)[-500:])
        model_mb = sum(p.stat().st_size for p in model.rglob("*") if p.is_file()) / 2**20
    timing = Timing.of(walls)
    rows.insert(
        0,
        [
            "median wall seconds (import + load + predict one sentence)",
            timing.median,
            f"IQR {timing.iqr:.2f} s over {timing.n} run(s)",
        ],
    )
    if phases is not None:
        rows += phase_rows(phases, model_mb)
    rows.append(["import time: all modules", sum(imports.values()), "-X importtime, self times"])
    top = sorted(imports.items(), key=lambda kv: -kv[1])[:8]
    rows += [[f"import time: {name}", sec, "self times of its modules"] for name, sec in top]
    if phases is not None:
        imports = {**dict.fromkeys(phases["modules"], 0.0), **imports}
    forbidden = [m for m in FORBIDDEN if m in imports]
    rows += [
        [
            f"forbidden modules imported ({', '.join(FORBIDDEN)})",
            ", ".join(forbidden) or "none",
            "",
        ],
        [
            "other watched modules imported",
            ", ".join(m for m in WATCHED if m in imports) or "none",
            ", ".join(WATCHED),
        ],
    ]
    summary = [
        target(
            "CLI cold start, median seconds",
            round(timing.median, 2),
            f"< {COLD_START_TARGET_S:g} s",
            timing.median < COLD_START_TARGET_S,
        ),
        target(
            f"{' / '.join(FORBIDDEN)} imported",
            ", ".join(forbidden) or "none",
            "none",
            not forbidden,
        ),
    ]
    if failures:
        summary.append(target("failed runs", len(failures), "0", False))
    notes = [
        f"Command: {' '.join(Path(c).name for c in cli_command())} predict --model <folder> "
        f"{SENTENCE!r}; {runs} fresh process(es), cwd = the project root.",
        f"Model folder: untrained bert_crf over {encoder.name}, written by Tagger.save and "
        f"exported to ONNX in {save_s:.1f} s ({model_mb:.0f} MiB with the torch weights "
        "prediction does not read; the page cache is warm after that write).",
        f"Output of the last run: {output[:200]}",
    ]
    if failures:
        notes.append("FAILED: " + " / ".join(failures))
    record = result(
        args,
        "Cold start of `complex-ner predict`",
        COLUMNS,
        rows,
        summary=summary,
        notes=notes,
        machine=machine,
        walls=walls,
        median_s=timing.median,
        imports=imports,
        forbidden_imported=forbidden,
        phases=phases,
        failures=failures,
    )
    return emit(record, args.json)


if __name__ == "__main__":
    main()
