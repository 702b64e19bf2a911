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

Request limits (:data:`LIMITS`, the one place they are set): at most 256 rows and 5,000
characters per request, 1,000 characters per row. A request over them, or one the model cannot
read, is answered by the scoring server with HTTP 400 and a message naming the row and the field
(an ``INVALID_PARAMETER_VALUE`` :class:`~mlflow.exceptions.MlflowException`).
"""

from __future__ import annotations

from numbers import Integral
from typing import Any

import mlflow.pyfunc
import pandas as pd
from mlflow.models import set_model

from complex_ner.core.paths import TAGGER_ARTIFACT
from complex_ner.engines.predict import InputError, RequestLimits, load_tagger, predict_entities

#: What one request may ask for. A MultiCoNER sentence has under 300 characters; the time of a
#: request grows with its characters, and the largest allowed, with the scoring server's other
#: requests running beside it, must finish inside its 60 s request timeout on a loaded 2-core
#: CPU (docs/reliability.md).
LIMITS = RequestLimits(max_rows=256, max_chars=1_000, max_total_chars=5_000)


class NerPyfunc(mlflow.pyfunc.PythonModel):
    """A complex-ner tagger folder's ONNX export served through MLflow."""

    def load_context(self, context: Any) -> None:
        self.tagger = load_tagger(context.artifacts[TAGGER_ARTIFACT])

    # MLflow reads this hint: a DataFrame (what the signature's columns give) is handed over
    # as it is, without a second schema of its own.
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        from mlflow.exceptions import MlflowException

        try:
            batch_size = (params or {}).get("batch_size", 64)
            if (
                not isinstance(batch_size, Integral)
                or isinstance(batch_size, bool)
                or batch_size < 1
            ):
                raise InputError(f"params.batch_size must be an integer >= 1, got {batch_size!r}")
            entities = predict_entities(self.tagger, model_input, int(batch_size), LIMITS)
        except InputError as exc:
            # INVALID_PARAMETER_VALUE: the scoring server answers HTTP 400 with this message.
            raise MlflowException.invalid_parameter_value(str(exc)) from None
        return pd.DataFrame({"entities": entities})


set_model(NerPyfunc())
