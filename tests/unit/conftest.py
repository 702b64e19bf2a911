"""The unit tier's rules, enforced: no real data, no subprocesses.

A unit test that asks for the MultiCoNER folder fails at set-up; one that starts a subprocess
fails at tear-down, naming the command. Such tests belong in ``tests/integration``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_MOVE = "move the test to tests/integration"

# OS probes that the standard library makes on a library's behalf (platform.architecture runs
# `file`, platform.processor `uname`, ctypes.util.find_library `ldconfig`/`gcc`, and
# matplotlib `fc-list` when it builds its font cache, once per fresh environment): not the
# test's own processes.
_PROBES = frozenset({"file", "uname", "ldconfig", "gcc", "cc", "fc-list"})

_started: list[str] | None = None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _started is None:
        return
    if event == "subprocess.Popen":
        executable, argv = args[0], args[1]
        if Path(str(executable)).name not in _PROBES:
            command = argv if isinstance(argv, str | bytes) else " ".join(map(str, argv))
            _started.append(str(command)[:160])
    elif event in ("os.system", "os.posix_spawn"):
        _started.append(str(args[0])[:160])


sys.addaudithook(_audit)  # process-wide and permanent; it only records while a unit test runs


@pytest.fixture(autouse=True)
def _no_subprocesses() -> Iterator[None]:
    global _started
    _started = []
    yield
    started, _started = _started, None
    if started:
        pytest.fail(
            f"unit tests start no subprocesses, this one started {started}; {_MOVE}",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def multiconer_dir() -> Path:
    """Overrides tests/conftest.py: unit tests run without the real data."""
    pytest.fail(
        f"unit tests do not read the real data: use conll_sample, or {_MOVE}", pytrace=False
    )
