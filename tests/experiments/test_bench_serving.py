"""``experiments/bench_serving.py --small`` end to end, so the serving benchmark does not rot.

One run (about a minute: a load subprocess and ``mlflow models serve`` on 127.0.0.1) shared by
the tests below: the generated directory must be what ``recsys.factors`` writes, and the result
rows must hold sane numbers (positive, ordered percentiles, the model's lists equal to the bare
NumPy ones, HTTP 400 for every bad payload).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("bench_serving", ROOT / "experiments" / "bench_serving.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    bench = _script()
    tmp = tmp_path_factory.mktemp("bench-serving")
    results = tmp / "out" / "serving"
    rows = bench.main(["--small", "--scratch", str(tmp / "scratch"), "--results", str(results)])
    return {"bench": bench, "rows": rows, "results": results,
            "factors": tmp / "scratch" / bench.SMALL.name() / "factors"}


def _value(rows, measure, run):
    matches = [row for row in rows if row["measure"] == measure and row["run"] == run]
    assert len(matches) == 1, f"expected one row {measure!r} / {run!r}, got {len(matches)}"
    return matches[0]


def test_generated_directory_has_the_factors_layout(small_run):
    from recsys.recommend import FORMAT

    scale, factors = small_run["bench"].SMALL, small_run["factors"]
    meta = json.loads((factors / "meta.json").read_text())
    assert meta["format"] == FORMAT and meta["kind"] == "ranking"
    assert set(meta["files"]) == {"user_ids.npy", "user_factors.npy", "item_ids.npy", "item_factors.npy",
                                  "seen_indptr.npy", "seen_indices.npy", "popular_ids.npy",
                                  "popular_scores.npy", "titles.json"}
    for name, spec in meta["files"].items():
        if name.endswith(".npy"):
            array = np.load(factors / name)
            assert (str(array.dtype), list(array.shape)) == (spec["dtype"], spec["shape"]), name
    indptr, indices = np.load(factors / "seen_indptr.npy"), np.load(factors / "seen_indices.npy")
    assert np.load(factors / "user_factors.npy").shape == (scale.n_users, scale.rank)
    assert indptr.shape == (scale.n_users + 1,) and indptr[-1] == indices.shape[0] == meta["n_seen_pairs"]
    assert abs(indices.shape[0] - scale.n_pairs) <= 0.01 * scale.n_pairs
    assert np.diff(indptr).min() >= 1 and indices.min() >= 0 and indices.max() < scale.n_movies
    # within a user: ascending positions, no movie twice
    starts = np.zeros(indices.shape[0], dtype=bool)
    starts[indptr[:-1]] = True
    steps = np.diff(indices.astype(np.int64))
    assert np.all((steps > 0) | starts[1:])
    # the cold-start list is ordered by popularity (rating count), most popular first
    scores = np.load(factors / "popular_scores.npy")
    assert np.all(np.diff(scores) <= 0) and scores[0] == np.bincount(indices).max()


def test_small_run_rows_hold_sane_numbers(small_run):
    rows = small_run["rows"]
    load = _value(rows, "load_model", "load 1")
    assert 0 < load["value"] < 60 and load["met"] == "yes"
    for measure in ("VmRSS after load", "VmHWM after predictions"):
        assert 50 < _value(rows, measure, "load 1")["value"] < 2048
    for label in ("bare Q@p + top-k, no mask", "bare Q@p + seen mask + top-k", "PythonModel.predict",
                  "pyfunc predict"):
        p50, p90, p99 = (_value(rows, f"{label} p{q}", "in-process 1")["value"] for q in (50, 90, 99))
        assert 0 < p50 <= p90 <= p99, label
    ratio = _value(rows, "pyfunc / bare (masked), medians", "in-process 1")
    assert ratio["value"] > 0 and ratio["target"] == "<= 2"
    assert ratio["note"] == "lists differing from bare: 0"
    p50, p99, worst = (_value(rows, f"HTTP {name}", "http 1")["value"] for name in ("p50", "p99", "max"))
    assert 0 < p50 <= p99 <= worst
    for name in ("unknown column", "string userId", "k=0"):
        bad = _value(rows, f"bad payload: {name}", "http")
        assert (bad["value"], bad["met"]) == (400, "yes"), bad
    assert all(row["load1"] >= 0 for row in rows)


def test_small_run_writes_the_table(small_run):
    rows, results = small_run["rows"], small_run["results"]
    with open(results.with_suffix(".csv"), newline="", encoding="utf-8") as fh:
        written = list(csv.DictReader(fh))
    assert len(written) == len(rows)
    assert written[0]["scale"].startswith("5,000 users x 2,000 movies x rank 16")
    assert {row["measure"] for row in written} == {row["measure"] for row in rows}
    text = results.with_suffix(".md").read_text()
    assert "--small" in text and "## Every run" in text and "Targets missed:" in text
