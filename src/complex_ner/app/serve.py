"""Prediction, composed once: a model by registry URI or folder, then entities or CoNLL tags.

Kept apart from :mod:`complex_ner.app.stages` so that ``complex-ner predict`` and the batch flow
import neither torch nor transformers: the model is the folder's ONNX export
(:class:`~complex_ner.engines.onnx_tagger.OnnxTagger`, or an ensemble folder's
:class:`~complex_ner.engines.onnx_ensemble.OnnxEnsemble`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from complex_ner.adapters import http_serving, registry, tracking
from complex_ner.core.config import Params
from complex_ner.core.paths import CHOICE_JSON, ENSEMBLE, ENSEMBLE_FILE, best_model_dir, eval_dir
from complex_ner.domain.data import Sentence
from complex_ner.engines import onnx_ensemble
from complex_ner.engines import predict as prediction
from complex_ner.engines.predict import Predictor

__all__ = [
    "BatchJob",
    "build_ensemble",
    "chosen_ensemble",
    "finish_batch",
    "load_model",
    "model_folder",
    "plan_batch",
    "predict",
    "predict_chunk",
    "predict_conll",
    "predict_file",
    "serve_http",
]

BatchJob = prediction.BatchJob


def model_folder(model: str, params: Params) -> Path:
    """The local tagger folder of a registry URI (``models:/name@alias``, ``runs:/...``; MLflow
    downloads it when its store is remote) or of a folder (relative to the project)."""
    if model.startswith(("models:/", "runs:/")):
        return registry.resolve_tagger_dir(model, params)
    path = Path(model)
    if not path.is_absolute() and (params.root / path).exists():
        path = params.root / path
    return path


def load_model(model: str, params: Params, *, threads: int = 0, int8: bool = False) -> Predictor:
    """A tagger from a registry URI (``models:/name@alias``, ``runs:/...``), a model folder or an
    ensemble folder (``complex-ner ensemble``).

    Args:
        model: The URI or folder.
        params: Where the registry is.
        threads: onnxruntime's intra-op threads; 0 lets onnxruntime choose.
        int8: Run the dynamically quantized export.
    """
    return prediction.load_tagger(model_folder(model, params), threads=threads, int8=int8)


def build_ensemble(
    models: Sequence[str], rule: str, out: Path, params: Params, lang: str | None = None
) -> dict[str, Any]:
    """Write an ensemble folder of several models (registry URIs or folders) that
    ``complex-ner predict --model <out>`` runs as one model.

    Raises:
        ValueError: Fewer than two models, an unknown rule, or members of another language than
            ``lang`` or with other tags (naming the member).
        FileNotFoundError: A model that does not resolve to a tagger folder with an ONNX export.
    """
    folders = [prediction.tagger_folder(model_folder(m, params)) for m in models]
    return onnx_ensemble.save_ensemble(out, folders, rule, sources=models, lang=lang)


def chosen_ensemble(params: Params, lang: str) -> tuple[list[str], str]:
    """The model folders and rule of the ensemble the evaluate stage chose on val for ``lang``
    (its ``choice.json``, written when ``evaluate.ensemble_rules`` is set).

    Raises:
        FileNotFoundError: No ``choice.json`` (the evaluate stage made no ensemble choice).
        ValueError: A ``choice.json`` without ``chosen.members`` and ``chosen.rule``.
    """
    path = eval_dir(params, lang, ENSEMBLE) / CHOICE_JSON
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no ensemble choice; the evaluate stage writes it when "
            "evaluate.ensemble_rules is set (make run-paper)"
        )
    chosen = json.loads(path.read_text(encoding="utf-8")).get("chosen") or {}
    members, rule = chosen.get("members"), chosen.get("rule")
    if not isinstance(members, list) or not isinstance(rule, str):
        raise ValueError(f"{path}: field chosen must hold members (a list) and rule")
    return [str(best_model_dir(params, lang, arch)) for arch in members], rule


# One tagger per worker process, loaded by its first chunk: a process pool's workers tag many
# chunks each and must not reload the model for every one.
_WORKER_TAGGERS: dict[tuple[str, int, bool], Predictor] = {}


def plan_batch(
    folder: Path, input_path: Path, output: Path, chunk_size: int = 2000, int8: bool = False
) -> BatchJob:
    """Cut ``input_path`` into chunks for ``folder``'s model (an interrupted run's plan and
    finished chunks when it is the same job); malformed input fails here."""
    key = prediction.batch_model_key(folder, int8)
    return prediction.plan_batch(input_path, output, chunk_size, key)


def predict_chunk(
    folder: Path,
    job: BatchJob,
    index: int,
    batch_size: int = 64,
    threads: int = 1,
    int8: bool = False,
) -> dict[str, Any]:
    """Tag one chunk of ``job`` in this (worker) process with ``folder``'s model; see
    :func:`complex_ner.engines.predict.predict_chunk`."""
    key = (str(folder), threads, int8)
    if key not in _WORKER_TAGGERS:
        _WORKER_TAGGERS[key] = prediction.load_tagger(folder, threads=threads, int8=int8)
    return prediction.predict_chunk(_WORKER_TAGGERS[key], job, index, batch_size)


def finish_batch(job: BatchJob) -> dict[str, int]:
    """Join the finished chunks into the submission file (atomic) and drop the parts."""
    prediction.join_batch(job)
    return {"sentences": job.sentences, "chunks": len(job.spans)}


def predict(tagger: Predictor, rows: Sequence[Any], batch_size: int = 64) -> list[list[dict]]:
    """Entities for raw sentences (strings) or pre-tokenized rows (lists of words)."""
    return prediction.predict_entities(tagger, list(rows), batch_size)


def predict_conll(
    tagger: Predictor, rows: Sequence[Any], lang: str, batch_size: int = 64
) -> tuple[list[Sentence], list[list[str]]]:
    """Sentences and their predicted BIO tags, ready for ``format_conll``: raw lines are
    tokenized as MultiCoNER does; empty lines are dropped."""
    sentences = prediction.as_sentences(rows, lang)
    tags = tagger.predict([s.tokens for s in sentences], batch_size=batch_size)
    return sentences, tags


def predict_file(
    tagger: Predictor,
    input_path: Path,
    output: Path,
    chunk_size: int = 2000,
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """Tag a (large) MultiCoNER file in resumable chunks; the submission file is atomic."""
    return prediction.predict_conll_batched(
        tagger, input_path, output, chunk_size, batch_size, progress=progress
    )


def serve_http(model: str, params: Params, host: str = "127.0.0.1", port: int = 5001) -> None:
    """Serve a pyfunc model (``models:/name@alias`` of the project's registry, ``runs:/`` or a
    model folder) over MLflow's scoring protocol, guarded
    (:mod:`complex_ner.adapters.http_serving`).

    Raises:
        LookupError: no such model.
        ValueError: an ensemble folder (they run through ``complex-ner predict``).
    """
    local = not model.startswith(("models:/", "runs:/"))
    if local and (model_folder(model, params) / ENSEMBLE_FILE).is_file():
        raise ValueError(
            f"{model}: an ensemble folder; HTTP serving takes a logged or registered model "
            f"(models:/name@alias); tag with `complex-ner predict --model {model}`"
        )
    tracking.setup(params)
    http_serving.serve(model, host, port)
