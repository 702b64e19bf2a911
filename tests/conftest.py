"""Shared fixtures: offline environment, the project root and the real MultiCoNER data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

for _k, _v in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_k, _v)


def real_data_dir() -> Path | None:
    """The MultiCoNER folder named by params.yaml (or $COMPLEX_NER_DATA_SOURCE), if present."""
    from complex_ner.core.config import load_params

    path = load_params(ROOT / "params.yaml").source_dir
    return path if (path / "es" / "train.conll").is_file() else None


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def multiconer_dir() -> Path:
    path = real_data_dir()
    if path is None:
        pytest.skip(
            "MultiCoNER source folder not found (data.source_dir / $COMPLEX_NER_DATA_SOURCE)"
        )
    return path


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread for the test (timings and float reductions stable on a shared host)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
