"""What a saved tagger folder says about itself: ``tagger.json`` (spec and metadata).

Torch-free, so the ONNX prediction path (:mod:`complex_ner.engines.onnx_tagger`) and the torch
tagger (:mod:`complex_ner.domain.models.tagger`) read the same file the same way.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from complex_ner.core.config import (
    Arch,
    HeadConfig,
    LabelPiece,
    ModelConfig,
    StrTuple,
    WindowConfig,
    config_error,
)
from complex_ner.core.paths import TAGGER_FILE
from complex_ner.domain.alignment import EncodedWindow, encode_sentences

__all__ = ["FORMAT_VERSION", "TaggerSpec", "read_tagger_json"]

#: Version of the ``tagger.json`` layout: a flat ``spec`` (tags, arch, head hyperparameters,
#: window settings, label_piece, lang, encoder_name).
FORMAT_VERSION = 1


class TaggerSpec(HeadConfig, WindowConfig):
    """Everything needed to rebuild a tagger besides its weights.

    The head hyperparameters and window settings are those of :class:`ModelConfig` (inherited,
    so they are declared once); the rest is fixed when the tagger is built.
    """

    tags: StrTuple
    arch: Arch
    label_piece: LabelPiece
    lang: str
    encoder_name: str

    @classmethod
    def from_config(
        cls, model: ModelConfig, tags: Sequence[str], lang: str, encoder_name: str
    ) -> TaggerSpec:
        """The spec of a tagger built from ``model`` for ``lang`` with this encoder."""
        # Head and window settings by name; the label piece is resolved for the language.
        shared = model.model_dump(include=set(cls.model_fields))
        return cls.model_validate(
            {
                **shared,
                "label_piece": model.piece_for(lang),
                "tags": tuple(tags),
                "lang": lang,
                "encoder_name": encoder_name,
            }
        )

    def encode(self, tokenizer: Any, sentences: Sequence[Sequence[str]]) -> list[EncodedWindow]:
        """Encoder windows for these sentences with this spec's alignment settings."""
        return encode_sentences(
            tokenizer,
            sentences,
            max_length=self.max_length,
            stride=self.stride,
            label_piece=self.label_piece,
            join=self.join,
        )

    def to_json(self) -> dict[str, Any]:
        """The flat JSON object stored under ``spec`` in ``tagger.json``."""
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, raw: Any, source: str | Path = TAGGER_FILE) -> TaggerSpec:
        """Read :meth:`to_json`'s object (any ``FORMAT_VERSION`` 1 file).

        Raises:
            ConfigError: an unknown or missing field or a bad value, named with ``source``.
        """
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise config_error(source, cls, exc) from None


def read_tagger_json(folder: str | Path) -> tuple[TaggerSpec, dict[str, Any]]:
    """The spec and the whole metadata object of a tagger folder's ``tagger.json``.

    Raises:
        FileNotFoundError: ``folder`` has no ``tagger.json``.
        ValueError: an unsupported ``format_version``, or a bad ``spec`` (a
            :class:`~complex_ner.core.config.ConfigError` naming the field).
    """
    meta_path = Path(folder) / TAGGER_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{folder}: not a complex-ner model folder (no {TAGGER_FILE})")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{meta_path}: unsupported format_version {meta.get('format_version')}")
    return TaggerSpec.from_json(meta.get("spec"), meta_path), meta
