"""Chunked batch prediction through Prefect: throughput with 1 and 2 worker processes, peak memory.

Builds a test-size file (``--sentences``, default 200,000) from the Spanish MultiCoNER training
text: its sentences repeated in a new seeded order on every pass, with fresh ids and no tags,
written as a stream. Then runs the ``batch_predict`` flow (flows/batch_predict.py: chunks
mapped over Prefect tasks on a process pool) on its first ``--sizes`` sentences with each
``--workers`` count, and reports sentences per second (tagging only, and end to end with the
planning pass and the join), each worker process's peak resident memory, and the flow process's.
Memory must stay flat as the file grows: compare the rows of one worker count across sizes.

The model: ``--model`` (a trained tagger folder with its ONNX export), else an untrained tagger
over ``--encoder`` (the trimmed e5 of the pipeline: the real model's size and speed; untrained
weights tag at the same speed), else (``--tiny``, ``--quick`` or no encoder) over a tiny random
BERT (hidden 32, 2 layers: the chunking, the pool and memory at full file sizes).

    python -m benchmarks.bench_batch_predict --encoder models/encoders/trimmed --sizes 4000
    python -m benchmarks.bench_batch_predict --quick
"""

from __future__ import annotations

import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    ROOT,
    PeakRSS,
    base_parser,
    emit,
    es_train_path,
    parse,
    release_memory,
    result,
    tag_set,
    tiny_encoder,
    toy_sentences,
)
from complex_ner.core.config import ModelConfig
from complex_ner.core.io import atomic_path
from complex_ner.domain.data import Sentence, iter_conll

COLUMNS = (
    "model",
    "sentences",
    "workers",
    "chunks",
    "tagging s",
    "sent/s (tagging)",
    "end to end s",
    "sent/s (end to end)",
    "worker CPU s",
    "sent per worker CPU s",
    "peak MiB per worker",
    "flow process peak MiB",
)


def build_test_file(source: Sequence[Sentence], n: int, out: Path, seed: int = 13) -> Path:
    """``n`` unlabelled sentences: ``source`` over and over, reshuffled every pass, new ids."""
    rng = random.Random(seed)
    order = list(range(len(source)))
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        written, rep = 0, 0
        while written < n:
            rng.shuffle(order)
            for i in order[: n - written]:
                s = source[i]
                fh.write(f"# id {s.id}-r{rep}\tdomain=bench\n")
                fh.writelines(f"{tok} _ _ _\n" for tok in s.tokens)
                fh.write("\n")
            written += min(len(order), n - written)
            rep += 1
    return out


def head(path: Path, n: int, out: Path) -> Path:
    """The first ``n`` sentences of a built file (its blocks end with a blank line)."""
    count = 0
    with open(path, encoding="utf-8") as src, atomic_path(out) as tmp, open(tmp, "w") as dst:
        for line in src:
            dst.write(line)
            if line == "\n":
                count += 1
                if count == n:
                    break
    return out


def make_model(args: Any, scratch: Path) -> tuple[Path, str]:
    """The tagger folder to predict with (exported to ONNX), and how the table names it."""
    if args.model is not None:
        return Path(args.model), f"trained: {args.model}"
    from complex_ner.domain.models.tagger import build_model
    from complex_ner.engines.export import export_onnx

    if args.encoder is not None and not (args.quick or args.tiny):
        encoder, label = args.encoder, f"untrained head on {args.encoder.name}"
    else:
        encoder, label = tiny_encoder(scratch / "tiny-bert"), "untrained, tiny BERT"
    tagger = build_model(str(encoder), tag_set(), ModelConfig(arch="bert_crf"), "es")
    folder = tagger.save(scratch / "model")
    words = [list(s.tokens) for s in toy_sentences(16)]
    export_onnx(folder, words, batch_size=16, strict=False)
    return folder, label


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = base_parser("batch_predict", __doc__, threads=1)
    parser.add_argument("--sentences", type=int, default=200_000, help="size of the built file")
    parser.add_argument(
        "--sizes", default=None, help="comma-separated prefixes to tag (default: the whole file)"
    )
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--chunk-size", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--model", type=Path, default=None, help="a trained tagger folder")
    parser.add_argument(
        "--tiny", action="store_true", help="a tiny random BERT (real text, full sizes)"
    )
    parser.add_argument("--keep", type=Path, default=None, help="build the file here and keep it")
    args = parse(parser, argv)
    if args.quick:
        args.sentences, args.sizes, args.chunk_size = 600, args.sizes or "300,600", 100
    sizes = [int(s) for s in (args.sizes or str(args.sentences)).split(",")]
    workers = [int(w) for w in args.workers.split(",")]

    sys.path.insert(0, str(ROOT))  # flows/ is not a package on the import path
    from flows.batch_predict import run

    rows, records = [], []
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        scratch = Path(tmp)
        folder, label = make_model(args, scratch)
        if args.quick:
            source, origin = toy_sentences(200), "synthetic sentences"
        else:
            source = list(iter_conll(es_train_path()))
            origin = f"{es_train_path()} ({len(source):,} sentences)"
        full = args.keep or scratch / "test.conll"
        started = time.perf_counter()
        build_test_file(source, max(args.sentences, *sizes), full)
        built_s = time.perf_counter() - started
        # Starts Prefect's temporary server (and the pool's workers) before anything is timed.
        warm = head(full, 50, scratch / "warm.conll")
        run(
            1,
            input_path=str(warm),
            output_path=str(scratch / "warm.pred"),
            model=str(folder),
            chunk_size=25,
            batch_size=args.batch_size,
            threads=args.threads,
        )
        for size in sizes:
            part = full if size == args.sentences else head(full, size, scratch / f"{size}.conll")
            for w in workers:
                out = scratch / f"pred-{size}-{w}.conll"
                release_memory()
                started = time.perf_counter()
                with PeakRSS() as parent:
                    got = run(
                        w,
                        input_path=str(part),
                        output_path=str(out),
                        model=str(folder),
                        chunk_size=args.chunk_size,
                        batch_size=args.batch_size,
                        threads=args.threads,
                    )
                total_s = time.perf_counter() - started
                tagging_s = got["tagging_seconds"]
                assert got["sentences"] == size, got
                peaks = sorted(wk["peak_rss_mb"] for wk in got["workers"])
                cpu = sum(wk["cpu_seconds"] for wk in got["workers"])
                record = {
                    "model": label,
                    "sentences": size,
                    "workers": w,
                    "chunks": got["chunks"],
                    "tagging_s": tagging_s,
                    "tagging_rate": size / tagging_s,
                    "total_s": total_s,
                    "total_rate": size / total_s,
                    "worker_cpu_s": cpu,
                    "sentences_per_worker_cpu_s": size / cpu,
                    "worker_peak_mb": peaks,
                    "loadavg_1min": os.getloadavg()[0],
                    "flow_process_peak_mb": parent.peak,
                }
                records.append(record)
                rows.append(
                    [label, size, w, got["chunks"], tagging_s, size / tagging_s, total_s]
                    + [size / total_s, cpu, size / cpu]
                    + [" / ".join(f"{p:,.0f}" for p in peaks), parent.peak]
                )
                out.unlink()
        shutil.rmtree(scratch / "model", ignore_errors=True)
    notes = [
        f"Input: {origin}, repeated and reshuffled into {args.sentences:,} sentences "
        f"(built in {built_s:.1f} s); chunks of {args.chunk_size:,}, batches of "
        f"{args.batch_size}, {args.threads} onnxruntime thread(s) per worker.",
        "Tagging s: from mapping the chunks over the tasks to the last result (Prefect's "
        "process pool: worker start-up and one model load per worker included); end to end "
        "adds the planning pass over the whole file (which also checks it) and the join.",
        "Worker CPU s: user + system CPU time of the worker processes (imports and model load "
        "included); sentences per worker CPU second do not depend on how busy the machine is, "
        "wall-clock rates do (loadavg_1min of each row is in the JSON).",
        "Peak MiB per worker: each worker process's peak resident memory (VmHWM), model "
        "included; flow process: sampled RSS of the process that planned and joined.",
    ]
    record = result(
        args,
        "Chunked batch prediction (Prefect process pool)",
        COLUMNS,
        rows,
        notes=notes,
        records=records,
    )
    return emit(record, args.json)


if __name__ == "__main__":
    main()
