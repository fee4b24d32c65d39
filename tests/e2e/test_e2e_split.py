"""`mlflow run . -e split --env-manager local` end to end, into a temporary tracking store."""

from __future__ import annotations

import pytest

from tests.support.e2e import mlflow_run, runs

pytestmark = pytest.mark.e2e


def test_split_entry_point(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    split_dir = tmp_path / "split"
    # `mlflow run --experiment-name` wins over the default experiment (recsys), and the run MLflow
    # made is named by what it is, not by MLflow's random name
    done = mlflow_run("split", uri, f"split_dir={split_dir}", options=("--experiment-name", "chosen"))
    assert done.returncode == 0, done.stderr[-3000:]
    client, found = runs(uri, "chosen")
    assert len(found) == 1
    run = found[0]
    assert run.info.status == "FINISHED"
    assert run.info.run_name == run.data.tags["mlflow.runName"] == "split random 0.8/0.1/0.1 seed 42"
    assert client.get_experiment_by_name("recsys") is None
    assert run.data.params["strategy"] == "random"
    assert run.data.params["fractions"] == "0.8,0.1,0.1"
    m = run.data.metrics
    assert m["train_rows"] + m["validation_rows"] + m["test_rows"] == 100_836
    assert m["train_users"] == 610
    assert m["train_rows"] / 100_836 == pytest.approx(0.8, abs=0.01)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "manifest.json" in artifacts
    contexts = {i.tags[0].value for i in run.inputs.dataset_inputs}
    assert contexts == {"train", "validation", "test"}
    assert (split_dir / "manifest.json").exists()

    # bad parameters: non-zero exit, a named error, the run FAILED with it recorded, nothing written
    bad_dir = tmp_path / "bad"
    failed = mlflow_run("split", uri, f"split_dir={bad_dir}", "fractions=0.8,0.3,0.1")
    assert failed.returncode != 0
    assert "must sum to 1" in failed.stderr
    _, found = runs(uri)
    last = found[-1]
    assert last.info.status == "FAILED"
    assert "must sum to 1" in last.data.tags["recsys.error"]
    # given no experiment, `mlflow run` made the run in its Default, where it stays; named by its
    # stage, as it failed before its parameters were valid
    assert len(found) == 1 and last.info.run_name == "split"
    assert not bad_dir.exists()
