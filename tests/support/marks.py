"""Which cases of a long parametrised test the fast suite (``./dev.sh test``) runs.

The fast suite keeps a few representative cases of each table of bad inputs, one per kind of
check; the rest are marked ``slow`` and run in the full suite (``./dev.sh test-all``)."""

from __future__ import annotations

import pytest


def fast_cases(names, fast):
    """``names`` as parametrize values; those not in ``fast`` are marked slow."""
    names = list(names)
    unknown = set(fast) - set(names)
    assert not unknown, f"fast_cases: no such case(s): {sorted(unknown)}"
    return [n if n in fast else pytest.param(n, marks=pytest.mark.slow) for n in names]
