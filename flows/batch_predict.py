"""Prefect flow: tag a large MultiCoNER file in resumable chunks (a thin wrapper)."""

from __future__ import annotations

import sys
from pathlib import Path

from prefect import flow, get_run_logger, task

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))


@task(name="predict-file", timeout_seconds=24 * 3600)
def predict_file_task(
    input_path: str, output_path: str, model: str, chunk_size: int, batch_size: int
) -> dict[str, int]:
    from complex_ner.engines.predict import load_tagger, predict_conll_batched

    logger = get_run_logger()
    tagger = load_tagger(model, ROOT)
    return predict_conll_batched(
        tagger,
        Path(input_path),
        Path(output_path),
        chunk_size=chunk_size,
        batch_size=batch_size,
        progress=lambda n: logger.info("%s sentences tagged", f"{n:,}"),
    )


@flow(name="batch_predict", log_prints=True)
def batch_predict(
    input_path: str,
    output_path: str,
    lang: str = "es",
    model: str | None = None,
    chunk_size: int = 2000,
    batch_size: int = 64,
) -> dict[str, int]:
    """Write the submission file for ``input_path``; a rerun resumes after the last chunk."""
    uri = model or f"models:/complex-ner-{lang}@champion"
    return predict_file_task(input_path, output_path, uri, chunk_size, batch_size)


if __name__ == "__main__":
    print(batch_predict(*sys.argv[1:3], lang=sys.argv[3] if len(sys.argv) > 3 else "es"))
