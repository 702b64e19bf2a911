"""The MLflow pyfunc wrapper: raw sentences or token lists in, entities out.

Input: a DataFrame with a ``text`` column (raw sentences) or a ``tokens`` column (lists of
words), or a plain list of strings / token lists. Output: a DataFrame with one ``entities``
list per input row, each entity a dict with text, type, character offsets (``start``, ``end``),
token offsets (``token_start``, ``token_end``) and ``confidence``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mlflow.pyfunc

from complex_ner.predict import entities_from_tags, model_words, tokenize

TAGGER_ARTIFACT = "tagger"


class InputError(ValueError):
    """A request the model cannot read; the message names the row and the field."""


def _rows(model_input: Any) -> list[tuple[str | None, list[str] | None]]:
    """Normalise the accepted input shapes into ``(text, tokens)`` per row."""
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        cols = [c for c in ("text", "tokens") if c in model_input.columns]
        if not cols:
            raise InputError(
                f"expected a 'text' or 'tokens' column, got {list(model_input.columns)}"
            )
        records = model_input[cols].to_dict("records")
    elif isinstance(model_input, str):
        records = [{"text": model_input}]
    elif isinstance(model_input, dict):
        records = [model_input]
    elif isinstance(model_input, Sequence):
        records = [
            {"tokens": x} if isinstance(x, list | tuple) else {"text": x} for x in model_input
        ]
    else:
        raise InputError(f"unsupported input type {type(model_input).__name__}")
    out: list[tuple[str | None, list[str] | None]] = []
    for i, rec in enumerate(records):
        text, tokens = rec.get("text"), rec.get("tokens")
        if tokens is not None and not _is_missing(tokens):
            seq = list(tokens)
            if not all(isinstance(t, str) and t and not any(c.isspace() for c in t) for t in seq):
                raise InputError(f"row {i}: 'tokens' must be a list of non-empty strings")
            out.append((None, seq))
        elif text is not None and not _is_missing(text):
            if not isinstance(text, str):
                raise InputError(f"row {i}: 'text' must be a string, got {type(text).__name__}")
            out.append((text, None))
        else:
            raise InputError(f"row {i}: give 'text' (a string) or 'tokens' (a list of strings)")
    return out


def _is_missing(value: Any) -> bool:
    return isinstance(value, float) and value != value  # NaN from a half-filled DataFrame


def predict_entities(
    tagger: Any, model_input: Any, batch_size: int = 64
) -> list[list[dict[str, Any]]]:
    """Entities for every input row (see the module docstring for the accepted shapes)."""
    lang = tagger.spec.lang
    rows = _rows(model_input)
    prepared = []
    for text, tokens in rows:
        if tokens is not None:
            prepared.append((None, None, list(tokens)))
        else:
            assert text is not None
            toks = tokenize(text, lang)
            prepared.append((text, toks, model_words(toks, lang)))
    words = [w for _, _, w in prepared]
    nonempty = [i for i, w in enumerate(words) if w]
    ids, marg = tagger.predict_ids([words[i] for i in nonempty], batch_size, with_marginals=True)
    out: list[list[dict[str, Any]]] = [[] for _ in rows]
    for k, i in enumerate(nonempty):
        text, toks, w = prepared[i]
        tags = [tagger.tags[t] for t in ids[k]]
        ents = entities_from_tags(
            tags,
            tokens=toks,
            text=text,
            marginals=marg[k] if marg is not None else None,
            tag_index=tagger.tag_to_id,
            words=w,
        )
        out[i] = [e.to_dict() for e in ents]
    return out


class NerPyfunc(mlflow.pyfunc.PythonModel):
    """A complex-ner tagger folder served through MLflow."""

    def load_context(self, context: Any) -> None:
        import torch

        from complex_ner.models.tagger import Tagger

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
