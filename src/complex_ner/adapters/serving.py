"""The MLflow pyfunc model: raw sentences or token lists in, entities out.

MLflow loads this file "from code" (``Run.log_pyfunc`` logs its path): it runs the module, which
hands :class:`NerPyfunc` to :func:`mlflow.models.set_model`; nothing is unpickled. The model's
artifact is the tagger folder without its torch weights: ``tagger.json``, ``head.safetensors``,
``tokenizer/`` and the ONNX export, run by onnxruntime (:mod:`complex_ner.engines.onnx_tagger`),
so serving imports neither torch nor transformers.

Input: a DataFrame with a ``text`` column (raw sentences) or a ``tokens`` column (lists of
words), or a plain list of strings / token lists. Output: a DataFrame with one ``entities``
list per input row, each entity a dict with text, type, character offsets (``start``, ``end``),
token offsets (``token_start``, ``token_end``) and ``confidence``.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import pandas as pd
from mlflow.models import set_model

from complex_ner.core.paths import TAGGER_ARTIFACT
from complex_ner.engines.predict import load_tagger, predict_entities


class NerPyfunc(mlflow.pyfunc.PythonModel):
    """A complex-ner tagger folder's ONNX export served through MLflow."""

    def load_context(self, context: Any) -> None:
        self.tagger = load_tagger(context.artifacts[TAGGER_ARTIFACT])

    # MLflow reads this hint: a DataFrame (what the signature's columns give) is handed over
    # as it is, without a second schema of its own.
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        batch_size = int((params or {}).get("batch_size", 64))
        return pd.DataFrame({"entities": predict_entities(self.tagger, model_input, batch_size)})


set_model(NerPyfunc())
