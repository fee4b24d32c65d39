"""`mlflow run . -e twins --env-manager local` end to end on the bundled data."""

from __future__ import annotations

import csv
import io
import json

import pytest

from tests.support.e2e import mlflow_run, runs

pytestmark = pytest.mark.e2e


def test_twins_entry_point(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    done = mlflow_run("twins", uri, "method=banded", "compare_exact=true")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[twins] recall against exact" in done.stderr
    client, found = runs(uri)
    assert len(found) == 1
    run = found[0]
    assert run.info.status == "FINISHED"
    params = run.data.params
    keys = ("method", "n_pairs", "n_hashes", "min_ratings", "compare_exact", "seed")
    assert {k: params[k] for k in keys} == {
        "method": "banded", "n_pairs": "100", "n_hashes": "128", "min_ratings": "20",
        "compare_exact": "true", "seed": "42"}
    assert {"target_similarity", "bucket_cap", "n_random", "min_common", "data"} <= set(params)
    m = run.data.metrics
    assert m["users_kept"] == 610 and m["users_left_out"] == 0
    assert m["recall"] >= 0.95
    assert 0 < m["exact_floor0"] <= m["exact_final_floor"] <= m["top_jaccard"]  # the exact kernel's floors
    assert (m["bands"], m["rows"]) == (42, 3)
    assert 0 < m["candidate_pairs"] < 610 * 609 / 2
    assert m["top_jaccard"] == pytest.approx(0.7)
    assert m["twins_pearson_count"] == 100 and m["random_pearson_count"] == 100
    assert m["twins_pearson_defined"] + m["twins_pearson_undefined"] == 100
    assert m["twins_pearson_ci_low"] <= m["twins_pearson_mean"] <= m["twins_pearson_ci_high"]
    assert 0 < m["pearson_p_value"] <= 1
    for stage in ("sets", "exact", "candidates", "scoring", "validation", "total"):
        assert m[f"{stage}_seconds"] > 0
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"twins.csv", "random_pairs.csv", "exact_twins.csv", "validation.json",
            "twins_pearson_hist.png", "twins_jaccard.png"} <= artifacts
    table = list(csv.DictReader(io.StringIO(
        open(client.download_artifacts(run.info.run_id, "twins.csv", str(tmp_path))).read())))
    assert len(table) == 100
    assert list(table[0]) == ["rank", "userA", "userB", "jaccard", "size_a", "size_b", "common", "pearson"]
    assert (table[0]["userA"], table[0]["userB"]) == ("130", "145")
    assert all(int(r["userA"]) < int(r["userB"]) for r in table)
    validation = json.loads(open(client.download_artifacts(run.info.run_id, "validation.json",
                                                            str(tmp_path))).read())
    assert validation["twins"]["mean"] == pytest.approx(m["twins_pearson_mean"])
    assert validation["random"]["undefined"] == m["random_pearson_undefined"]

    # a bad parameter fails the run with the parameter named, before any Spark work
    failed = mlflow_run("twins", uri, "method=brute")
    assert failed.returncode != 0
    assert "method='brute' is unknown" in failed.stderr
    _, found = runs(uri)
    assert found[-1].info.status == "FAILED"
    assert "allowed: banded, approx_join, exact" in found[-1].data.tags["recsys.error"]
