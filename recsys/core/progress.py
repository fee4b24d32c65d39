"""The one progress convention.

A library function that reports progress takes ``progress: Progress = quiet`` and calls
``progress("[stage] message")``; it never prints, logs or imports MLflow. The jobs
(``recsys.jobs``) pass :func:`recsys.mlops.tracking.say`, which writes the line to stderr; scripts
pass ``print`` or their own callable.
"""

from __future__ import annotations

from collections.abc import Callable

#: Receives one progress line (no trailing newline).
Progress = Callable[[str], None]


def quiet(_message: str) -> None:
    """The default ``progress``: says nothing."""
