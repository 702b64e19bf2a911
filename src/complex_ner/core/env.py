"""Offline, quiet defaults for every process the project starts: set once, here.

``complex_ner/__init__.py`` applies them on import, so the CLI, the DVC stage commands (which
run the CLI), the Prefect flows and the tests all get them; a value the user already set wins.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

#: No model hub, no telemetry, no progress-bar floods, no tokenizer fork warnings.
OFFLINE_DEFAULTS: Mapping[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # The temporary server's cold start took 12-19 s and once passed Prefect's 20 s default.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "TOKENIZERS_PARALLELISM": "false",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
}

#: The project folder of a source checkout (src/complex_ner/core/env.py -> three levels up).
PROJECT_ROOT = Path(__file__).resolve().parents[3]


def apply_defaults(environ: dict[str, str] | None = None) -> None:
    """Fill in :data:`OFFLINE_DEFAULTS` and ``PREFECT_HOME`` without overriding the user's."""
    env = os.environ if environ is None else environ
    for key, value in OFFLINE_DEFAULTS.items():
        env.setdefault(key, value)
    if (PROJECT_ROOT / "dvc.yaml").is_file():
        env.setdefault("PREFECT_HOME", str(PROJECT_ROOT / ".prefect"))
