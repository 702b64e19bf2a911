"""Secrets kept out of logs, MLflow params and tags, and files: the one masking rule.

A tracking or database URI may carry a password (``http://user:pass@host``,
``postgresql://user:pass@host/db``) or a token in its query (``?token=...``), and the
environment may hold credentials (``*_TOKEN``, ``*_PASSWORD``, ``*_SECRET``, ``*_KEY``...). Every
place that writes text the project did not make itself passes it through :func:`redact`: the
MLflow params and tags (:mod:`complex_ner.adapters.tracking`), run links, the registry's alias
file and the stage output the pipeline relays to its log (:mod:`complex_ner.adapters.dvc`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

MASK = "***"

# scheme://user:password@host -> scheme://user:***@host
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s]*):(?P<secret>[^/\s]*)@")
_QUERY = re.compile(
    r"(?P<head>[?&;](?:password|passwd|pwd|token|access_token|secret|api_key|apikey|key|sig|"
    r"signature|X-Amz-Signature|X-Amz-Credential)=)(?P<secret>[^&#\s]+)",
    re.IGNORECASE,
)
#: Environment variables whose values are credentials (matched on the name).
SECRET_ENV = re.compile(r"PASSWORD|PASSWD|TOKEN|SECRET|CREDENTIAL|(^|_)KEY($|_)|API_KEY|AUTH")
#: Shorter values are not masked wherever they occur: "1" or "true" would mask everything.
_MIN_SECRET = 6


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of the credential-like variables of ``environ`` (default: this process's),
    longest first."""
    env = os.environ if environ is None else environ
    values = {v for k, v in env.items() if SECRET_ENV.search(k.upper()) and len(v) >= _MIN_SECRET}
    return sorted(values, key=len, reverse=True)


def redact(text: str, secrets: Sequence[str] | None = None) -> str:
    """``text`` with URI passwords, credential query parameters and the values of credential
    environment variables (``secrets``, default :func:`secret_values`) replaced by ``***``."""
    if not text:
        return text
    out = _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", text)
    out = _QUERY.sub(lambda m: f"{m['head']}{MASK}", out)
    for value in secret_values() if secrets is None else secrets:
        out = out.replace(value, MASK)
    return out


def redact_mapping(values: Mapping[str, str]) -> dict[str, str]:
    """Every value of ``values`` through :func:`redact` (params and tags before MLflow)."""
    secrets = secret_values()
    return {k: redact(str(v), secrets) for k, v in values.items()}
