"""The real deployment parts on loopback: a Spark standalone cluster and an MLflow tracking
server, driven through the same commands a user runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from recsys.core.constants import ALS_BLOCKS_CONF
from tests.support.e2e import ROOT, mlflow_run
from tests.support.services import mlflow_server, spark_standalone

TINY_SPACE = ("explicit:\n  rank: {dist: quniform, low: 2, high: 4, q: 1}\n"
              "  reg_param: {dist: loguniform, low: 0.05, high: 0.5}\n")
ALS_ARGS = {"rank": 4, "max_iter": 3, "seed": 3}
TWINS_ARGS = {"min_ratings": 5, "n_pairs": 20, "n_hashes": 32, "n_random": 20, "seed": 3}


def _options(values: dict) -> list[str]:
    return [item for key, value in values.items() for item in (f"--{key.replace('_', '-')}", str(value))]


def _recsys(args, env, cwd=ROOT, wait=True):
    full = dict(os.environ, **env)
    cmd = [sys.executable, "-m", "recsys", *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=cwd, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    return subprocess.run(cmd, cwd=cwd, env=full, capture_output=True, text=True, timeout=900)


def _finished(client, experiment_id, stage):
    return client.search_runs([experiment_id], f"tags.`recsys.stage` = '{stage}' and "
                              "attributes.status = 'FINISHED'", order_by=["attributes.start_time ASC"])


@pytest.mark.cluster
def test_standalone_cluster_matches_local(tmp_path, spark, bundled):
    import csv

    import mlflow

    from recsys.data import SplitConfig, make_split
    from tests.support.tiny_movielens import write_tiny_movielens

    local_dir = tmp_path / "local-split"
    local, _ = make_split(spark, bundled.ratings, SplitConfig(strategy="user", seed=9), str(local_dir),
                          source=bundled.source, source_checksum=bundled.checksum,
                          progress=lambda _m: None)
    tiny = write_tiny_movielens(tmp_path / "tiny")
    # validated and cached here first, so the two cluster jobs that read it do not both convert it
    from recsys.data import load_movielens

    ratings = load_movielens(spark, tiny, progress=lambda _m: None).ratings
    cluster_dir, tiny_cluster_dir = tmp_path / "cluster-split", tmp_path / "cluster-tiny-split"
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with spark_standalone(tmp_path / "cluster") as master:
        env = {"SPARK_MASTER": master, "MLFLOW_TRACKING_URI": uri}
        done = _recsys(["split", "--split-dir", str(cluster_dir), "--strategy", "user", "--seed", "9",
                        "--spark-conf", "spark.executor.memory=1g;spark.cores.max=2"], env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        # als and twins side by side, one core each (the one worker has two)
        # and the ALS blocks of this process's session, for the local fit compared below
        blocks = spark.conf.get(ALS_BLOCKS_CONF, "10")
        conf = ["--spark-conf", f"spark.executor.memory=900m;spark.cores.max=1;{ALS_BLOCKS_CONF}={blocks}"]
        # ALS on the tiny release: its default split is made on the cluster by the job itself
        jobs = {"als": _recsys(["als", "--data", tiny, "--split-dir", str(tiny_cluster_dir),
                                *_options(ALS_ARGS), *conf], env, cwd=tmp_path, wait=False),
                "twins": _recsys(["twins", "--data", tiny, *_options(TWINS_ARGS), *conf], env,
                                 cwd=tmp_path, wait=False)}
        for name, proc in jobs.items():
            _, err = proc.communicate(timeout=900)
            assert proc.returncode == 0, f"{name}: {err[-3000:]}"
        worker_log = (tmp_path / "cluster" / "worker.log").read_text()
    # the work ran on the cluster's executors (one per application), not in a local driver
    apps = set(re.findall(r"Asked to launch executor (app-[\w-]+)/", worker_log))
    assert len(apps) == 3, worker_log[-3000:]  # split, als, twins
    remote = json.loads((cluster_dir / "manifest.json").read_text())
    assert remote["digests"] == local["digests"]
    assert remote["counts"] == local["counts"]

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("recsys").experiment_id  # the CLI's default experiment
    [als_run], [twins_run] = _finished(client, exp, "als"), _finished(client, exp, "twins")

    # ALS: the same split and fit in this process's local[2] session. Same split content,
    # seed and blocks: the factors differ only by the order of floating-point sums
    from recsys.core.constants import DEFAULT_K, DEFAULT_RELEVANCE_THRESHOLD
    from recsys.evaluation import HeldOut
    from recsys.jobs import ensure_split, fit_and_judge
    from recsys.models import ALSConfig, BiasBaseline

    parts = ensure_split(spark, tiny, str(tmp_path / "local-tiny-split"))
    remote_tiny = json.loads((tiny_cluster_dir / "manifest.json").read_text())
    assert parts.manifest["digests"] == remote_tiny["digests"]
    train = parts.train.cache()
    held = HeldOut(train, parts.validation, k=DEFAULT_K, relevance_threshold=DEFAULT_RELEVANCE_THRESHOLD,
                   fallback=BiasBaseline().fit(train))
    _, metrics, _ = fit_and_judge(ALSConfig(**ALS_ARGS), held)
    held.release()
    train.unpersist()
    remote_metrics = als_run.data.metrics
    assert remote_metrics["val_rmse"] == pytest.approx(metrics["rmse"], abs=1e-6)
    assert remote_metrics["val_mae"] == pytest.approx(metrics["mae"], abs=1e-6)
    for key in ("precision_at_k", "recall_at_k", "ndcg_at_k", "map_at_k"):
        assert remote_metrics[f"val_{key}"] == pytest.approx(metrics[key], abs=1e-6), key
    assert {k: als_run.data.params[k] for k in ALS_ARGS} == {k: str(v) for k, v in ALS_ARGS.items()}

    # twins: the library on the same data here; the top pairs and their Jaccard are identical
    from recsys.twins import TwinsConfig, find_twins, validate_twins

    config = TwinsConfig(**TWINS_ARGS)
    result = find_twins(ratings, config)
    rows, _, validation = validate_twins(spark, ratings, result, config)
    table = client.download_artifacts(twins_run.info.run_id, "twins.csv", str(tmp_path / "dl"))
    with open(table) as fh:
        remote_rows = list(csv.DictReader(fh))
    assert len(remote_rows) == len(rows) == TWINS_ARGS["n_pairs"]
    assert [(int(r["userA"]), int(r["userB"]), float(r["jaccard"])) for r in remote_rows] == \
        [(r["userA"], r["userB"], pytest.approx(r["jaccard"], abs=1e-12)) for r in rows]
    # the exact kernel ran in the cluster's Python workers (its counters depend on their number)
    remote = twins_run.data.metrics
    assert remote["exact_tasks"] >= 1 and 0 < remote["exact_final_floor"] <= float(remote_rows[-1]["jaccard"])
    assert twins_run.data.metrics["twins_pearson_mean"] == pytest.approx(validation["twins"]["mean"],
                                                                         abs=1e-9)


@pytest.mark.server
def test_tracking_server_receives_runs(tmp_path, spark, monkeypatch):
    import mlflow

    with mlflow_server(tmp_path) as url:
        done = mlflow_run("split", url, f"split_dir={tmp_path / 'split'}")
        assert done.returncode == 0, done.stderr[-3000:]
        client = mlflow.MlflowClient(url)
        exp = client.get_experiment_by_name("Default")
        runs = client.search_runs([exp.experiment_id])
        assert len(runs) == 1 and runs[0].info.status == "FINISHED"
        assert runs[0].data.metrics["train_users"] == 610
        # the artifact went through the server and comes back through it
        local = client.download_artifacts(runs[0].info.run_id, "manifest.json", str(tmp_path))
        assert json.loads(open(local).read())["input"]["rows"] == 100_836
        assert (tmp_path / "artifacts").exists()

        # a tiny search and a promotion, in this process, logging to the same server
        _search_and_promote_through(url, client, exp.experiment_id, tmp_path, monkeypatch)


def _search_and_promote_through(url, client, experiment_id, tmp_path, monkeypatch):
    import math

    import mlflow
    import pandas as pd
    from click.testing import CliRunner

    from recsys.cli import main as cli
    from tests.support.tiny_movielens import write_tiny_movielens

    data = write_tiny_movielens(tmp_path / "tiny")
    space = tmp_path / "space.yaml"
    space.write_text(TINY_SPACE)
    monkeypatch.chdir(tmp_path)
    # the environment, not mlflow.set_tracking_uri: set_tracking_uri(None) would drop the
    # session's MLFLOW_TRACKING_URI for later tests
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    done = CliRunner().invoke(cli, ["als-search", "--data", data, "--split-dir",
                                    str(tmp_path / "tiny-split"), "--max-evals", "2", "--max-iter",
                                    "2", "--seed", "5", "--space", str(space)])
    assert done.exit_code == 0, done.output[-3000:]
    done = CliRunner().invoke(cli, ["promote"])
    assert done.exit_code == 0, done.output[-3000:]

    # read back through the server: the parent, its nested trials, their metrics and models; the
    # CLI logged to the experiment recsys (`mlflow run` above, given none, to MLflow's Default)
    experiment_id = client.get_experiment_by_name("recsys").experiment_id
    [parent] = _finished(client, experiment_id, "als_search")
    trials = _finished(client, experiment_id, "als_trial")
    assert len(trials) == 2
    for trial in trials:
        assert trial.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert 0.0 < trial.data.metrics["val_rmse"] < 2.0
        assert 2 <= int(trial.data.params["rank"]) <= 4 and trial.data.params["max_iter"] == "2"
        assert {a.path for a in client.list_artifacts(trial.info.run_id, "model")} >= \
            {"model/MLmodel", "model/sparkml"}
    best = parent.data.tags["recsys.best_run_id"]
    assert client.get_run(best).data.metrics["val_rmse"] == \
        min(t.data.metrics["val_rmse"] for t in trials)
    assert parent.data.metrics["trials_ok"] == 2

    # the registry through the server: an RMSE search goes to the rating predictor's name, as
    # @challenger, and @champion too when it beats the bias baseline on test (the gate)
    name = "recsys-als-ratings"
    challenger = client.get_model_version_by_alias(name, "challenger")
    assert challenger.version == "1"
    assert challenger.run_id == best and challenger.tags["recsys.source_run_id"] == parent.info.run_id
    gate = parent.data.metrics["test_rmse"] < parent.data.metrics["baseline_test_rmse"]
    [promotion] = _finished(client, experiment_id, "promote")
    assert promotion.data.tags["recsys.decision"] == ("promoted" if gate else "kept")
    assert set(client.get_model_version(name, "1").aliases) == ({"champion", "challenger"} if gate
                                                                 else {"challenger"})

    # and it serves: a known and an unknown (user, movie), no NaN
    model = mlflow.pyfunc.load_model(f"models:/{name}@challenger")
    got = model.predict(pd.DataFrame({"userId": [2, 10_000], "movieId": [1, 10_000]}))["score"]
    assert len(got) == 2 and not any(math.isnan(v) for v in got)
    assert all(0.5 <= v <= 5.0 for v in got)
