"""Real tokenizers and MultiCoNER sentences shared by test_encoders and test_alignment.

The e5 tokenizer is provisioned (tokenizer files only, ~3 s) and loaded (~5 s) once per test
session; a module-level cache shares it between test files, since session fixtures defined
outside a conftest are built once per module.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from complex_ner.domain.encoders import load_tokenizer, minilm_dir, provision_tokenizer

PROJECT_ROOT = Path(__file__).resolve().parents[2]

_CACHE: dict[str, Any] = {}


def data_dir() -> Path:
    """The MultiCoNER source folder (``COMPLEX_NER_DATA_SOURCE`` or the shared checkout)."""
    override = os.environ.get("COMPLEX_NER_DATA_SOURCE")
    return Path(override) if override else PROJECT_ROOT.parent / "shared" / "data" / "multiconer"


def read_conll(lang: str, limit: int = 300) -> tuple[list[list[str]], list[list[str]]]:
    """First ``limit`` sentences (words, tags) of ``<lang>/train.conll``; skip if it is missing."""
    path = data_dir() / lang / "train.conll"
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    sentences: list[list[str]] = []
    tags: list[list[str]] = []
    words: list[str] = []
    labels: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# id") or not line.strip():
            if words:
                sentences.append(words)
                tags.append(labels)
                words, labels = [], []
                if len(sentences) == limit:
                    break
            continue
        word, _, _, tag = line.rsplit(" ", 3)
        words.append(word)
        labels.append(tag)
    if words and len(sentences) < limit:
        sentences.append(words)
        tags.append(labels)
    return sentences, tags


def e5_tokenizer_dir(factory: pytest.TempPathFactory) -> Path:
    """A folder with only the e5 tokenizer files, provisioned once per session."""
    if "e5_dir" not in _CACHE:
        _CACHE["e5_dir"] = provision_tokenizer(factory.mktemp("e5") / "tokenizer")
    return _CACHE["e5_dir"]


def e5_tokenizer(factory: pytest.TempPathFactory) -> Any:
    """The multilingual-e5-small fast tokenizer, loaded once per session."""
    if "e5" not in _CACHE:
        _CACHE["e5"] = load_tokenizer(str(e5_tokenizer_dir(factory)))
    return _CACHE["e5"]


def minilm_tokenizer() -> Any:
    """The all-MiniLM-L6-v2 fast tokenizer (uncased English WordPiece), loaded once."""
    if "minilm" not in _CACHE:
        _CACHE["minilm"] = load_tokenizer(str(minilm_dir()))
    return _CACHE["minilm"]
