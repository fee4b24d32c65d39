"""``experiments/compare_backends.py`` at a tiny scale (2 trials, 1 seed, the tiny release), so the
backend comparison does not rot: its table holds every feedback x backend, its CSV one row per
trial, and a second run resumes the finished searches instead of fitting again."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("compare_backends",
                                                  ROOT / "experiments" / "compare_backends.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_compare_backends_runs_tiny_and_resumes(spark, tmp_path, capsys):
    from tests.support.tiny_movielens import write_tiny_movielens

    compare = _script()
    data = write_tiny_movielens(tmp_path / "tiny", n_users=60, per_user=24)
    out = tmp_path / "results"
    argv = ["--trials", "2", "--seeds", "1", "--data", data, "--split-dir", str(tmp_path / "split"),
            "--max-iter", "3", "--out", str(out), "--state-dir", str(tmp_path / "states")]
    assert compare.main(argv) == 0
    with open(out / "backends.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * 2 * 1 * 2  # feedback x backend x seed x trial
    assert {(r["feedback"], r["backend"]) for r in rows} == {
        (f, b) for f in ("explicit", "implicit") for b in ("hyperopt", "optuna")}
    for first, second in zip(rows[::2], rows[1::2], strict=True):
        assert (first["trial"], second["trial"]) == ("1", "2")
        assert first["best_so_far"] == first["value"]
        better = min if first["objective"] == "rmse" else max
        assert float(second["best_so_far"]) == better(float(first["value"]), float(second["value"]))
    assert {r["objective"] for r in rows if r["feedback"] == "implicit"} == {"precision_at_k"}
    table = (out / "backends.md").read_text()
    assert table.count("| explicit | rmse |") == 2 and table.count("| implicit | precision_at_k |") == 2
    assert "best after 2" in table

    # a second run finds the four finished searches in their states: the same table, no fit
    capsys.readouterr()
    assert compare.main(argv) == 0
    assert "resuming: 2 finished trial(s)" in capsys.readouterr().err
    with open(out / "backends.csv", newline="") as fh:
        assert list(csv.DictReader(fh)) == rows
