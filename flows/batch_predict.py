"""Prefect flow ``batch_predict``: tag a large MultiCoNER file in chunks, in parallel, resumably.

The flow plans the chunks in its own process (one streaming pass that also checks the whole
input), maps the chunks that are not finished yet over Prefect tasks on a process pool (each
worker process loads the model once and tags many chunks, each into its own part file,
atomically), then joins the parts in input order into the submission file in one atomic
rename. A rerun after an interruption skips the finished chunks. Memory per worker holds one
chunk, whatever the file's size.

    python flows/batch_predict.py es_test.conll es.pred.conll es --workers 2
    python flows/batch_predict.py big.conll big.pred.conll es --model models/trained/es/bert_crf

A deployment of this flow gets ``PREFECT_TASKS_RUNNER_PROCESS_POOL_MAX_WORKERS`` workers (all
cores when unset); :func:`run` picks the number per call.
"""

# complex_ner first: importing it sets the offline and Prefect defaults before Prefect reads them.
from complex_ner.app import serve  # isort: skip

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task, unmapped
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.task_runners import ProcessPoolTaskRunner

from complex_ner.core.config import load_params
from complex_ner.core.paths import champion_uri

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PARAMS = str(ROOT / "params.yaml")


@task(name="predict-chunk")
def predict_chunk_task(
    folder: str, job: serve.BatchJob, index: int, batch_size: int, threads: int, int8: bool
) -> dict[str, Any]:
    """Tag one chunk into its part file (in a worker process of the pool)."""
    return serve.predict_chunk(Path(folder), job, index, batch_size, threads, int8)


@flow(name="batch_predict", task_runner=ProcessPoolTaskRunner())
def batch_predict(
    input_path: str,
    output_path: str,
    lang: str = "es",
    model: str | None = None,
    chunk_size: int = 2000,
    batch_size: int = 64,
    threads: int = 1,
    int8: bool = False,
    params_path: str = DEFAULT_PARAMS,
) -> dict[str, Any]:
    """Write the submission file for ``input_path`` with ``model`` (default: the language's
    champion in the registry, fetched once here; the workers read the local folder).

    Args:
        threads: onnxruntime threads per worker process.

    Returns:
        ``sentences``, ``chunks``, ``reused_chunks`` (finished by an earlier run),
        ``tagging_seconds`` (the mapped tasks, worker start-up included) and, per worker
        process, the chunks it tagged, its peak memory and CPU seconds (``workers``).
    """
    logger = get_run_logger()
    params = load_params(params_path)
    folder = serve.model_folder(model or champion_uri(lang), params)
    job = serve.plan_batch(folder, Path(input_path), Path(output_path), chunk_size, int8)
    todo = [i for i in range(len(job.spans)) if not job.done(i)]
    logger.info(
        "%s sentences in %d chunks, %d left to tag", f"{job.sentences:,}", len(job.spans), len(todo)
    )
    started = time.perf_counter()
    futures = predict_chunk_task.map(
        unmapped(str(folder)),
        unmapped(job),
        todo,
        unmapped(batch_size),
        unmapped(threads),
        unmapped(int8),
    )
    done = futures.result()
    tagging_seconds = time.perf_counter() - started
    result: dict[str, Any] = serve.finish_batch(job)
    workers: dict[int, dict[str, float]] = {}
    for chunk in done:
        worker = workers.setdefault(
            chunk["pid"], {"chunks": 0, "peak_rss_mb": 0.0, "cpu_seconds": 0.0}
        )
        worker["chunks"] += 1
        for key in ("peak_rss_mb", "cpu_seconds"):  # both only grow in a process
            worker[key] = max(worker[key], chunk[key])
    result["reused_chunks"] = len(job.spans) - len(todo)
    result["tagging_seconds"] = tagging_seconds
    result["workers"] = list(workers.values())
    return result


def run(workers: int = 1, **kwargs: Any) -> dict[str, Any]:
    """:func:`batch_predict` on a pool of ``workers`` processes.

    Without a Prefect server (no ``PREFECT_API_URL``) the flow's temporary server is started
    here and its address handed to the pool: otherwise every worker process starts a temporary
    server of its own (15-20 s each, measured).
    """
    pool = ProcessPoolTaskRunner(max_workers=workers)
    configured = PREFECT_API_URL.value()
    if configured:
        return batch_predict.with_options(task_runner=pool)(**kwargs)
    # Imported here: the server module is heavy, and a configured server does not need it.
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the one Prefect's client would start on its own
    server.start()
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        return batch_predict.with_options(task_runner=pool)(**kwargs)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input_path")
    parser.add_argument("output_path")
    parser.add_argument("lang", nargs="?", default="es")
    parser.add_argument("--model", help="models:/name@alias or a model folder (default: champion)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads per worker")
    parser.add_argument("--chunk-size", type=int, default=2000, help="sentences per chunk")
    parser.add_argument("--batch-size", type=int, default=64, help="sentences per forward pass")
    parser.add_argument("--int8", action="store_true", help="run the int8-quantized export")
    args = parser.parse_args(argv)
    return run(
        args.workers,
        input_path=args.input_path,
        output_path=args.output_path,
        lang=args.lang,
        model=args.model,
        chunk_size=args.chunk_size,
        batch_size=args.batch_size,
        threads=args.threads,
        int8=args.int8,
    )


if __name__ == "__main__":
    print(main(sys.argv[1:]))
