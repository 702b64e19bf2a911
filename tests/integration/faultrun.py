"""Run the ``complex-ner`` command with a fault injected (tests only; no hook in the product).

``python tests/integration/faultrun.py <complex-ner arguments>`` runs the CLI in this process
after wrapping two calls every writer in the project and its libraries goes through:

- ``os.replace`` / ``os.rename``: the commit point of every atomic write (file or folder);
- ``open`` for writing (``builtins.open`` / ``io.open``, which ``Path.write_text`` uses).

Environment:
    FAULT_MODE: ``replace`` (SIGKILL just before the Nth matching rename: everything the write
        produced is in its temporary, nothing committed) or ``open`` (SIGKILL just after the Nth
        matching file was opened, i.e. created empty or truncated: a writer that writes in place
        leaves a half-written file); empty: count only.
    FAULT_MATCH: count only calls whose destination path contains this string.
    FAULT_AT: N, 1-based.
    FAULT_COUNT_FILE: at a normal exit, write ``{"replace": r, "open": o}`` (matching calls)
        here: a clean run tells the test how many kill points a command has.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import signal
import sys

MODE = os.environ.get("FAULT_MODE", "")
MATCH = os.environ.get("FAULT_MATCH", "")
AT = int(os.environ.get("FAULT_AT", "0") or 0)
COUNT_FILE = os.environ.get("FAULT_COUNT_FILE", "")
COUNTS = {"replace": 0, "open": 0}

_replace, _rename, _open = os.replace, os.rename, io.open


def _hit(kind: str, path: object) -> bool:
    """Count a matching call; True when it is the one to die at."""
    try:
        name = os.fsdecode(os.fspath(path))  # type: ignore[arg-type]
    except TypeError:  # a file descriptor
        return False
    if MATCH and MATCH not in name:
        return False
    COUNTS[kind] += 1
    return kind == MODE and COUNTS[kind] == AT


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _replacing(original):  # noqa: ANN001, ANN202 (wraps os.replace and os.rename alike)
    def wrapper(src, dst, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if _hit("replace", dst):
            _die()
        return original(src, dst, *args, **kwargs)

    return wrapper


def _opening(file, mode="r", *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
    handle = _open(file, mode, *args, **kwargs)
    if any(c in mode for c in "wax+") and _hit("open", file):
        _die()
    return handle


def _write_counts() -> None:
    if COUNT_FILE:
        with _open(COUNT_FILE, "w", encoding="utf-8") as fh:
            json.dump(COUNTS, fh)


def main() -> None:
    os.replace = _replacing(_replace)
    os.rename = _replacing(_rename)
    builtins.open = _opening
    io.open = _opening
    import atexit

    atexit.register(_write_counts)
    from complex_ner.cli import app

    sys.argv[0] = "complex-ner"
    app(prog_name="complex-ner")


if __name__ == "__main__":
    main()
