"""Prefect flow ``batch_predict``: tag a large MultiCoNER file in resumable chunks.

A thin wrapper over the application layer (what ``complex-ner predict-batch`` calls); a rerun
resumes after the last finished chunk.

    python flows/batch_predict.py es_test.conll es.pred.conll es
"""

# complex_ner first: importing it sets the offline and Prefect defaults before Prefect reads them.
from complex_ner.app import serve  # isort: skip

import sys
from pathlib import Path

from prefect import flow, get_run_logger, task

from complex_ner.core.config import load_params
from complex_ner.core.paths import champion_uri

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PARAMS = str(ROOT / "params.yaml")


@task(name="predict-file")
def predict_file_task(
    input_path: str,
    output_path: str,
    model: str,
    chunk_size: int,
    batch_size: int,
    params_path: str = DEFAULT_PARAMS,
) -> dict[str, int]:
    """Load the model (registry URI or folder) and write the submission file."""
    logger = get_run_logger()
    tagger = serve.load_model(model, load_params(params_path))
    return serve.predict_file(
        tagger,
        Path(input_path),
        Path(output_path),
        chunk_size=chunk_size,
        batch_size=batch_size,
        progress=lambda n: logger.info("%s sentences tagged", f"{n:,}"),
    )


@flow(name="batch_predict")
def batch_predict(
    input_path: str,
    output_path: str,
    lang: str = "es",
    model: str | None = None,
    chunk_size: int = 2000,
    batch_size: int = 64,
    params_path: str = DEFAULT_PARAMS,
) -> dict[str, int]:
    """Write the submission file for ``input_path`` with ``model`` (default: the language's
    champion in the registry)."""
    uri = model or champion_uri(lang)
    return predict_file_task(input_path, output_path, uri, chunk_size, batch_size, params_path)


if __name__ == "__main__":
    print(batch_predict(*sys.argv[1:3], lang=sys.argv[3] if len(sys.argv) > 3 else "es"))
