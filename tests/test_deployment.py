"""The real deployment parts on loopback: a Spark standalone cluster and an MLflow tracking
server, driven through the same commands a user runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.e2e import ROOT, mlflow_run
from tests.services import mlflow_server, spark_standalone


def _recsys(args, env):
    full = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-m", "recsys", *args], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.cluster
def test_standalone_cluster_matches_local(tmp_path, spark, bundled):
    from recsys.split import SplitConfig, make_split

    local_dir = tmp_path / "local-split"
    local, _ = make_split(spark, bundled.ratings, SplitConfig(strategy="user", seed=9), str(local_dir),
                          source=bundled.source, source_checksum=bundled.checksum,
                          progress=lambda _m: None)
    cluster_dir = tmp_path / "cluster-split"
    with spark_standalone(tmp_path / "cluster") as master:
        done = _recsys(["split", "--split-dir", str(cluster_dir), "--strategy", "user", "--seed", "9",
                        "--spark-conf", "spark.executor.memory=1g;spark.cores.max=2"],
                       {"SPARK_MASTER": master,
                        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"})
        assert done.returncode == 0, done.stderr[-3000:]
        worker_log = (tmp_path / "cluster" / "worker.log").read_text()
    # the work ran on the cluster's executor, not in a local driver
    assert "Launching executor" in worker_log or "Asked to launch executor" in worker_log
    remote = json.loads((cluster_dir / "manifest.json").read_text())
    assert remote["digests"] == local["digests"]
    assert remote["counts"] == local["counts"]


@pytest.mark.server
def test_tracking_server_receives_runs(tmp_path):
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
