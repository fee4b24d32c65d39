"""`mlflow run . -e baseline --env-manager local` end to end on the bundled ml-latest-small."""

from __future__ import annotations

import csv

import pytest

from tests.support.e2e import mlflow_run, runs

pytestmark = pytest.mark.e2e


def test_baseline_entry_point(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    done = mlflow_run("baseline", uri, f"split_dir={tmp_path / 'split'}")
    assert done.returncode == 0, done.stderr[-3000:]
    client, found = runs(uri)
    run = found[-1]
    assert run.info.status == "FINISHED"
    p, m = run.data.params, run.data.metrics
    assert p["kind"] == "count" and p["k"] == "10" and p["evaluate_test"] == "false"
    # sanity range of issue 3 (random 80/10/10, relevance >= 4, seen removed, K = 10)
    assert 0.06 <= m["val_precision_at_k"] <= 0.075
    assert 0.86 <= m["val_bias_rmse"] <= 0.89
    assert m["val_n_users_evaluated"] + m["val_n_users_no_relevant"] == 598  # validation users
    assert 0 < m["val_recall_at_k"] < 1 and 0 < m["val_ndcg_at_k"] < 1 and 0 < m["val_map_at_k"] < 1
    assert "val_rmse" not in m  # count popularity predicts no ratings
    assert not [key for key in m if key.startswith("test_")]
    assert m["fit_seconds"] > 0 and m["eval_seconds"] > 0

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"top100.csv", "metrics.png"} <= artifacts
    local = client.download_artifacts(run.info.run_id, "top100.csv", str(tmp_path))
    with open(local, newline="", encoding="utf-8") as fh:
        top = list(csv.DictReader(fh))
    assert len(top) == 100 and [int(r["rank"]) for r in top] == list(range(1, 101))
    assert all(r["title"] for r in top)
    counts = [int(r["n_ratings"]) for r in top]
    assert counts == sorted(counts, reverse=True)

    # a bad parameter: non-zero exit, named error, run FAILED with it recorded
    failed = mlflow_run("baseline", uri, f"split_dir={tmp_path / 'split'}", "kind=best")
    assert failed.returncode != 0
    assert "kind='best'" in failed.stderr
    _, found = runs(uri)
    assert found[-1].info.status == "FAILED"
    assert "kind='best'" in found[-1].data.tags["recsys.error"]
