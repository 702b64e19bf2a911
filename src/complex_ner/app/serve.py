"""Prediction, composed once: a model by registry URI or folder, then entities or CoNLL tags.

Kept apart from :mod:`complex_ner.app.stages` so that ``complex-ner predict`` and the batch flow
import neither torch nor transformers: the model is the folder's ONNX export
(:class:`~complex_ner.engines.onnx_tagger.OnnxTagger`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from complex_ner.adapters import http_serving, registry, tracking
from complex_ner.core.config import Params
from complex_ner.domain.data import Sentence
from complex_ner.engines import predict as prediction
from complex_ner.engines.onnx_tagger import OnnxTagger

__all__ = ["load_model", "predict", "predict_conll", "predict_file", "serve_http"]


def load_model(model: str, params: Params, *, threads: int = 0, int8: bool = False) -> OnnxTagger:
    """A tagger from a registry URI (``models:/name@alias``, ``runs:/...``) or a folder.

    Args:
        model: The URI or folder.
        params: Where the registry is.
        threads: onnxruntime's intra-op threads; 0 lets onnxruntime choose.
        int8: Run the dynamically quantized export.
    """
    if model.startswith(("models:/", "runs:/")):
        folder = registry.resolve_tagger_dir(model, params)
        return prediction.load_tagger(folder, threads=threads, int8=int8)
    path = Path(model)
    if not path.is_absolute() and (params.root / path).exists():
        path = params.root / path
    return prediction.load_tagger(path, threads=threads, int8=int8)


def predict(tagger: OnnxTagger, rows: Sequence[Any], batch_size: int = 64) -> list[list[dict]]:
    """Entities for raw sentences (strings) or pre-tokenized rows (lists of words)."""
    return prediction.predict_entities(tagger, list(rows), batch_size)


def predict_conll(
    tagger: OnnxTagger, rows: Sequence[Any], lang: str, batch_size: int = 64
) -> tuple[list[Sentence], list[list[str]]]:
    """Sentences and their predicted BIO tags, ready for ``format_conll``: raw lines are
    tokenized as MultiCoNER does; empty lines are dropped."""
    sentences = prediction.as_sentences(rows, lang)
    tags = tagger.predict([s.tokens for s in sentences], batch_size=batch_size)
    return sentences, tags


def predict_file(
    tagger: OnnxTagger,
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
    """
    tracking.setup(params)
    http_serving.serve(model, host, port)
