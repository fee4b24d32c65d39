"""`mlflow run . -e als_search / promote / als --env-manager local` end to end on a tiny release:
nested trial runs with metrics and models, resume by extending the search, promotion of an RMSE
search to ``recsys-als-ratings`` through the baseline gate, and the registered version serving
through pyfunc (pair scores with fallbacks, never NaN; top-K lists without seen movies) and
keeping its Spark model."""

from __future__ import annotations

import json

import pytest

from tests.support.e2e import mlflow_run, runs
from tests.support.tiny_movielens import write_tiny_movielens

pytestmark = pytest.mark.e2e

EXPERIMENT = "als-e2e"


@pytest.fixture()
def store(tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    # artifacts under tmp_path, not ./mlruns of the checkout
    mlflow.MlflowClient(uri).create_experiment(EXPERIMENT, artifact_location=str(tmp_path / "artifacts"))
    return uri


def _run(entry, uri, *params):
    done = mlflow_run(entry, uri, *params, env={"MLFLOW_EXPERIMENT_NAME": EXPERIMENT})
    return done


def test_search_resume_promote_and_serve(tmp_path, store, monkeypatch, spark):
    import mlflow
    import pandas as pd

    # a trial's model is a logged model (MLflow 3); MlflowClient(uri).list_artifacts of a run's
    # model reads it through the default tracking URI (ModelsArtifactRepository), so point that
    # at this store too; restored after the test, whatever happens
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    data = write_tiny_movielens(tmp_path / "tiny")
    common = [f"data={data}", f"split_dir={tmp_path / 'split'}", "max_iter=2", "spark_master=local[2]"]
    done = _run("als_search", store, "max_evals=2", *common)
    assert done.returncode == 0, done.stderr[-3000:]
    client, found = runs(store, EXPERIMENT)
    parents = [r for r in found if r.data.tags.get("recsys.stage") == "als_search"]
    trials = [r for r in found if r.data.tags.get("recsys.stage") == "als_trial"]
    assert len(parents) == 1 and len(trials) == 2
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["recsys.objective"] == "rmse"
    assert parent.data.tags["recsys.feedback"] == "explicit"
    for trial in trials:
        assert trial.info.status == "FINISHED"
        assert trial.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert trial.info.run_name.startswith("rank=") and "reg_param=" in trial.info.run_name
        assert set(trial.data.params) >= {"rank", "reg_param", "max_iter", "alpha", "implicit_prefs"}
        m = trial.data.metrics
        assert 0.0 < m["val_rmse"] < 2.0 and 0.0 <= m["val_precision_at_k"] <= 1.0
        assert m["val_coverage"] == pytest.approx(1.0) and m["fit_seconds"] > 0
        assert {a.path for a in client.list_artifacts(trial.info.run_id, "model")} >= \
            {"model/MLmodel", "model/sparkml"}
    best = parent.data.tags["recsys.best_run_id"]
    best_run = client.get_run(best)
    assert best_run.data.metrics["val_rmse"] == min(t.data.metrics["val_rmse"] for t in trials)
    assert parent.data.metrics["val_rmse"] == best_run.data.metrics["val_rmse"]
    assert parent.data.metrics["test_rmse"] == best_run.data.metrics["test_rmse"] > 0
    assert parent.data.params["best_rank"] == best_run.data.params["rank"]
    assert "baseline_val_precision_at_k" in parent.data.metrics
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"trials.csv", "best.json", "search_space.yaml", "plots"} <= artifacts
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "plots")} == \
        {"plots/search_landscape.png", "plots/objective_per_trial.png"}

    # the same search with max_evals=3 resumes: two trials reused, one new, all under the new parent
    done = _run("als_search", store, "max_evals=3", *common)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming: 2 finished trial(s)" in done.stderr
    _, found = runs(store, EXPERIMENT)
    trials = [r for r in found if r.data.tags.get("recsys.stage") == "als_trial"]
    second = [r for r in found if r.data.tags.get("recsys.stage") == "als_search"][-1]
    assert len(trials) == 3 and len({t.info.run_name for t in trials}) == 3
    assert {t.data.tags["mlflow.parentRunId"] for t in trials} == {second.info.run_id}
    assert second.data.metrics["trials_ok"] == 3

    # promote the latest search: an RMSE search goes to the rating predictor's name, and becomes
    # champion only when it beats the bias baseline's test RMSE (the gate); @challenger is it either way
    done = _run("promote", store)
    assert done.returncode == 0, done.stderr[-3000:]
    _, found = runs(store, EXPERIMENT)
    promotion = [r for r in found if r.data.tags.get("recsys.stage") == "promote"][-1]
    gate = second.data.metrics["test_rmse"] < second.data.metrics["baseline_test_rmse"]
    assert promotion.data.tags["recsys.decision"] == ("promoted" if gate else "kept")
    assert promotion.data.params["registered_model_name"] == "recsys-als-ratings"
    assert promotion.data.metrics["baseline_test_rmse"] == second.data.metrics["baseline_test_rmse"]
    assert {a.path for a in client.list_artifacts(promotion.info.run_id)} >= \
        {"promotion.json", "promotion_history.csv"}
    mlflow.set_tracking_uri(store)
    try:
        version = client.get_model_version_by_alias("recsys-als-ratings", "challenger")
        assert version.run_id == second.data.tags["recsys.best_run_id"]
        # what was registered: the served recommender the search logged on its best trial
        assert version.source == client.get_run(version.run_id).data.tags["recsys.recommender_uri"]
        assert float(version.tags["test_rmse"]) == pytest.approx(second.data.metrics["test_rmse"])
        assert not client.search_model_versions("name='recsys-als'")  # the ranking name stays empty
        model = mlflow.pyfunc.load_model("models:/recsys-als-ratings@challenger")
        got = model.predict(pd.DataFrame({"userId": [2, 3, 10_000], "movieId": [1, 30, 10_000]}))
        assert list(got["score"].notna()) == [True] * 3 and got["score"].between(0.5, 5.0).all()
        lists = model.predict(pd.DataFrame({"userId": [2]}), params={"k": 3})
        assert list(lists["rank"]) == [1, 2, 3] and set(lists["source"]) == {"model"}
        seen = set(pd.read_parquet(tmp_path / "split" / "train").query("userId == 2")["movieId"])
        assert seen and not seen & set(lists["movieId"])
        # the registered version keeps the Spark ALS model, at a documented path
        local = mlflow.artifacts.download_artifacts(f"models:/recsys-als-ratings/{version.version}",
                                                    dst_path=str(tmp_path / "registered"))
        spark_model = mlflow.spark.load_model(f"{local}/artifacts/spark_model")
        assert any(type(s).__name__ == "ALSModel" for s in spark_model.stages)
    finally:
        mlflow.set_tracking_uri(None)  # (this drops MLFLOW_TRACKING_URI from the environment too)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    # promoting again registers nothing new
    done = _run("promote", store)
    assert done.returncode == 0, done.stderr[-3000:]
    assert ("already_champion" if gate else "kept") in done.stderr
    assert len(client.search_model_versions("name='recsys-als-ratings'")) == 1

    # implicit ALS through `als`: no rating metrics, the mode is tagged, the model serves 0.0 for unknowns
    done = _run("als", store, f"data={data}", f"split_dir={tmp_path / 'split'}", "implicit_prefs=true",
                "rank=3", "max_iter=2", "spark_master=local[2]")
    assert done.returncode == 0, done.stderr[-3000:]
    _, found = runs(store, EXPERIMENT)
    als_run = [r for r in found if r.data.tags.get("recsys.stage") == "als"][-1]
    assert als_run.data.tags["recsys.feedback"] == "implicit"
    assert "val_rmse" not in als_run.data.metrics and "val_ndcg_at_k" in als_run.data.metrics
    assert set(als_run.data.params) >= {"rank", "reg_param", "max_iter", "alpha", "implicit_prefs",
                                        "nonnegative", "biases", "seed", "k", "relevance_threshold"}
    mlmodel = client.download_artifacts(als_run.info.run_id, "model/MLmodel", str(tmp_path / "dl"))
    text = open(mlmodel).read()
    assert "signature" in text and "saved_input_example_info" in text
    assert json.loads(json.dumps(als_run.data.metrics))["fit_seconds"] > 0


def test_bad_parameters_fail_the_run_with_a_named_error(tmp_path, store):
    done = _run("als_search", store, "feedback=implicit", "objective=rmse",
                f"split_dir={tmp_path / 'split'}")
    assert done.returncode != 0
    assert "objective=rmse needs feedback=explicit" in done.stderr
    _, found = runs(store, EXPERIMENT)
    assert found[-1].info.status == "FAILED"
    assert "objective=rmse needs feedback=explicit" in found[-1].data.tags["recsys.error"]
    done = _run("als", store, "rank=0", f"split_dir={tmp_path / 'split'}")
    assert done.returncode != 0 and "rank=0 must be an integer >= 1" in done.stderr
