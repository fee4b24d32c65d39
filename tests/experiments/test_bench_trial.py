"""``experiments/bench_trial_overhead.py`` on the tiny release (2 trials), so the comparison of a
search trial with the same trial written with Spark's built-ins does not rot, and so the two
routes keep agreeing: the hand-written trial (``RegressionEvaluator``, ``recommendForUserSubset``
with ``k + max seen``, anti-join, ``RankingEvaluator``) must give the trial's metrics."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _script():
    path = ROOT / "experiments" / "bench_trial_overhead.py"
    spec = importlib.util.spec_from_file_location("bench_trial_overhead", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_bench_trial_tiny_same_metrics_both_routes(spark, tmp_path, monkeypatch):
    from tests.support.tiny_movielens import write_tiny_movielens

    # the script points MLflow at its own throw-away store: restored after the test
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/unused.db")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", "0")
    data = write_tiny_movielens(tmp_path / "tiny", n_users=60, per_user=24)
    out, rows = tmp_path / "table.md", []
    argv = ["--data", data, "--split-dir", str(tmp_path / "split"), "--trials", "2", "--max-iter", "3",
            "--k", "5", "--out", str(out)]
    assert _script().main(argv, rows_out=rows) == 0
    assert len(rows) == 2
    for row in rows:
        assert not row["stopped"]
        for key, (trial, hand) in row["metrics"].items():
            assert trial is not None and hand is not None, key
            assert math.isfinite(trial) and hand == pytest.approx(trial, abs=1e-6), key
        assert row["metrics"]["precision_at_k"][0] > 0  # the taste groups are learnable
        assert 0 < row["fit"] < row["trial"] and row["eval"] > 0 and row["hand"] > 0
    table = out.read_text()
    assert table.count("\n| 0 |") == 1 and table.count("\n| 1 |") == 1
    assert "max metric difference" in table and "ratio trial / hand-written: median" in table
