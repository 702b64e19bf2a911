"""The MLflow pyfunc wrapper: raw sentences or token lists in, entities out.

Input: a DataFrame with a ``text`` column (raw sentences) or a ``tokens`` column (lists of
words), or a plain list of strings / token lists. Output: a DataFrame with one ``entities``
list per input row, each entity a dict with text, type, character offsets (``start``, ``end``),
token offsets (``token_start``, ``token_end``) and ``confidence``.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc

from complex_ner.core.paths import TAGGER_ARTIFACT
from complex_ner.engines.predict import predict_entities


class NerPyfunc(mlflow.pyfunc.PythonModel):
    """A complex-ner tagger folder served through MLflow."""

    def load_context(self, context: Any) -> None:
        import torch

        from complex_ner.domain.models.tagger import Tagger

        torch.set_num_threads(max(1, torch.get_num_threads()))
        self.tagger = Tagger.load(context.artifacts[TAGGER_ARTIFACT])

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        import pandas as pd

        batch_size = int((params or {}).get("batch_size", 64))
        return pd.DataFrame({"entities": predict_entities(self.tagger, model_input, batch_size)})


def signature() -> Any:
    """Input: optional ``text`` (string) or ``tokens`` (list of strings); output: entities."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import (
        Array,
        ColSpec,
        DataType,
        Object,
        ParamSchema,
        ParamSpec,
        Property,
        Schema,
    )

    entity = Object(
        [
            Property("text", DataType.string),
            Property("type", DataType.string),
            Property("start", DataType.long),
            Property("end", DataType.long),
            Property("token_start", DataType.long),
            Property("token_end", DataType.long),
            Property("confidence", DataType.double),
        ]
    )
    return ModelSignature(
        inputs=Schema(
            [
                ColSpec(DataType.string, "text", required=False),
                ColSpec(Array(DataType.string), "tokens", required=False),
            ]
        ),
        outputs=Schema([ColSpec(Array(entity), "entities")]),
        params=ParamSchema([ParamSpec("batch_size", DataType.long, 64)]),
    )
