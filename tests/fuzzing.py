"""Hypothesis settings of the fuzz tests, and a tally of the cases they tried.

Every fuzz test runs twice: ``fast`` (in ``make test``) and ``long`` (marked
``reliability_long``, ``make reliability``). Each case reports its outcome to :func:`tally`;
``tests/conftest.py`` prints the counts at the end of the run (the figures of
docs/reliability.md).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

#: test name -> outcome ("result", "error: <kind>") -> cases.
TALLY: dict[str, Counter[str]] = {}


def tally(name: str, outcome: str) -> None:
    """Count one generated case of the fuzz test ``name``."""
    TALLY.setdefault(name, Counter())[outcome] += 1


def profiles(fast: int, long: int) -> list[Any]:
    """``pytest.param`` settings for a fuzz test: ``fast`` and ``long`` examples."""

    def make(n: int) -> settings:
        return settings(
            max_examples=n,
            deadline=None,
            suppress_health_check=[
                HealthCheck.too_slow,
                HealthCheck.data_too_large,
                HealthCheck.function_scoped_fixture,
                HealthCheck.large_base_example,
            ],
        )

    return [
        pytest.param(make(fast), id="fast"),
        pytest.param(make(long), id="long", marks=pytest.mark.reliability_long),
    ]
