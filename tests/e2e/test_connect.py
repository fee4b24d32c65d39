"""Spark Connect end to end (issue 28): `mlflow run . -e main` against a real
`start-connect-server.sh` server (its own JVM, reached over gRPC: no JVM in the client), compared
with the same entry point on classic Spark over the same split and seeds; then `recommend` and
`twins` on their own over Connect."""

from __future__ import annotations

import csv
import io
import shutil

import pandas as pd
import pytest

from tests.support.connect import spark_connect_server
from tests.support.e2e import mlflow_run

pytestmark = [pytest.mark.e2e, pytest.mark.server]

EXPERIMENT = {"MLFLOW_EXPERIMENT_NAME": "recsys"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with spark_connect_server(tmp_path_factory.mktemp("connect-server")) as url:
        yield url


def _champion(client, name: str, metric: str) -> tuple[float, str]:
    version = client.get_model_version_by_alias(name, "champion")
    return client.get_run(version.run_id).data.metrics[f"test_{metric}"], version.version


def _twins(client, run_id: str, where) -> list[tuple]:
    text = open(client.download_artifacts(run_id, "twins.csv", str(where)), encoding="utf-8").read()
    rows = csv.DictReader(io.StringIO(text))
    return [(int(r["userA"]), int(r["userB"]), float(r["jaccard"])) for r in rows]


def test_main_over_connect_equals_classic_then_recommend_and_twins_alone(tmp_path, server):
    import mlflow

    classic_dir, connect_dir = tmp_path / "classic", tmp_path / "connect"
    classic_dir.mkdir()
    connect_dir.mkdir()
    classic_uri, connect_uri = f"sqlite:///{classic_dir}/mlflow.db", f"sqlite:///{connect_dir}/mlflow.db"
    done = mlflow_run("main", classic_uri, "spark_master=local[2]", f"split_dir={classic_dir}/split",
                      timeout=1200, env=EXPERIMENT)
    assert done.returncode == 0, done.stderr[-3000:]
    # the same split (a copy: the batch lists are written beside it), the same seeds
    shutil.copytree(classic_dir / "split", connect_dir / "split")
    done = mlflow_run("main", connect_uri, f"spark_master={server}", f"split_dir={connect_dir}/split",
                      timeout=1500, env=EXPERIMENT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[split] done" in done.stderr and "(reused)" in done.stderr.split("[split] done", 1)[1][:80]

    classic, connect = mlflow.MlflowClient(classic_uri), mlflow.MlflowClient(connect_uri)
    for name, metric in (("recsys-als", "precision_at_k"), ("recsys-als-ratings", "rmse")):
        (ours, version), (theirs, _) = _champion(connect, name, metric), _champion(classic, name, metric)
        assert ours == pytest.approx(theirs, abs=1e-6), (name, metric)
    p10, _ = _champion(connect, "recsys-als", "precision_at_k")
    rmse, _ = _champion(connect, "recsys-als-ratings", "rmse")
    assert p10 > 0.09 and rmse < 0.877  # beats popularity (0.064) and the bias baseline (0.877)

    # the batch lists: every training user, the same movies in the same order as classic
    version = connect.get_model_version_by_alias("recsys-als", "champion").version
    ours = pd.read_parquet(connect_dir / "recommendations" / f"recsys-als-v{version}")
    theirs = pd.read_parquet(classic_dir / "recommendations" / f"recsys-als-v{version}")
    key = ["userId", "rank"]
    ours = ours.sort_values(key).reset_index(drop=True)
    theirs = theirs.sort_values(key).reset_index(drop=True)
    assert ours["userId"].nunique() == 610 and len(ours) == 6100
    assert ours[key + ["movieId"]].equals(theirs[key + ["movieId"]])
    assert (ours["score"] - theirs["score"]).abs().max() < 1e-5

    # the twins of `main`: the same top 100 pairs and Jaccards
    def twins_run(client):
        exp = client.get_experiment_by_name("recsys")
        [run] = client.search_runs([exp.experiment_id], "tags.`recsys.stage` = 'twins'")
        return run

    ours_twins = _twins(connect, twins_run(connect).info.run_id, connect_dir)
    assert len(ours_twins) == 100 and ours_twins[0][:2] == (130, 145)
    assert ours_twins == _twins(classic, twins_run(classic).info.run_id, classic_dir)

    # recommend and twins on their own over Connect
    out, wanted = connect_dir / "alone", connect_dir / "users.csv"
    wanted.write_text("userId\n1\n2\n3\n610\n")
    done = mlflow_run("recommend", connect_uri, f"spark_master={server}", f"split_dir={connect_dir}/split",
                      f"users={wanted}", f"output={out}", env=EXPERIMENT)
    assert done.returncode == 0, done.stderr[-3000:]
    alone = pd.read_parquet(out).sort_values(key).reset_index(drop=True)
    expected = theirs[theirs["userId"].isin([1, 2, 3, 610])].reset_index(drop=True)
    assert alone[key + ["movieId"]].equals(expected[key + ["movieId"]])
    done = mlflow_run("twins", connect_uri, f"spark_master={server}", "method=banded", "compare_exact=true",
                      env=EXPERIMENT)
    assert done.returncode == 0, done.stderr[-3000:]
    exp = connect.get_experiment_by_name("recsys")
    banded = connect.search_runs([exp.experiment_id], "params.method = 'banded'")[0]
    # 42 x 3 bands catch a pair at the bundled data's 100th Jaccard (0.444) with p ~ 0.98
    assert banded.data.metrics["recall"] >= 0.95 and banded.data.metrics["top_jaccard"] == pytest.approx(0.7)
