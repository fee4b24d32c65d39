"""Metric names with their direction: the objective a search optimises and a promotion compares
by (:class:`Objective`), and the one rule for which metric values are logged (finite ones)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from recsys.core.constants import MAP, NDCG, PRECISION, RMSE
from recsys.core.errors import RecsysError

#: Every metric a search may optimise, with its direction.
OBJECTIVES = {RMSE: "min", PRECISION: "max", NDCG: "max", MAP: "max"}
#: ``objective=auto``: RMSE for ratings, Precision@K for preferences.
DEFAULT_OBJECTIVE = {"explicit": RMSE, "implicit": PRECISION}


def finite_metrics(metrics: dict, prefix: str = "") -> dict:
    """``metrics`` as floats with keys ``<prefix><key>``, leaving out None, NaN and infinities
    (which MLflow would refuse or show as gaps)."""
    return {f"{prefix}{k}": float(v) for k, v in metrics.items()
            if v is not None and math.isfinite(float(v))}


@dataclass(frozen=True)
class Objective:
    """The metric a search optimises and its direction (``min`` or ``max``)."""

    metric: str
    direction: str

    @classmethod
    def for_search(cls, name: str, feedback: str) -> Objective:
        metric = DEFAULT_OBJECTIVE[feedback] if name in ("", "auto", None) else str(name)
        if metric not in OBJECTIVES:
            raise RecsysError(f"objective={name!r} is unknown; allowed: auto, {', '.join(OBJECTIVES)}")
        if metric == RMSE and feedback == "implicit":
            raise RecsysError("objective=rmse needs feedback=explicit: implicit ALS scores preferences, "
                              f"not ratings; use one of {', '.join(m for m in OBJECTIVES if m != RMSE)}")
        return cls(metric, OBJECTIVES[metric])

    def loss(self, metrics: dict) -> float:
        """Hyperopt's loss (smaller is better); raises ValueError when the metric is missing/NaN."""
        value = metrics.get(self.metric)
        if value is None or not math.isfinite(float(value)):
            raise ValueError(f"objective {self.metric} is {value!r}")
        return float(value) if self.direction == "min" else -float(value)

    def better(self, a: float, b: float) -> bool:
        """Is metric value ``a`` strictly better than ``b``?"""
        return a < b if self.direction == "min" else a > b
