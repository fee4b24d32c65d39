"""The `main` entry point in-process on a tiny release: every stage as a nested run, both model
roles registered through their baseline gates, and batch lists from the recommender."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.support.tiny_movielens import write_tiny_movielens

pytestmark = pytest.mark.slow


@pytest.fixture()
def own_store(tmp_path, monkeypatch, spark):
    # its own store: registered names are global to a store, and other tests promote too
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.chdir(tmp_path)  # the default artifact root (./mlruns) and outputs/ land here
    return f"sqlite:///{tmp_path}/mlflow.db"


def test_main_registers_both_roles_and_writes_lists_for_every_user(tmp_path, own_store):
    import mlflow

    from recsys import jobs

    data = write_tiny_movielens(tmp_path / "tiny", per_user=24)
    out = jobs.pipeline(data=data, split_dir=str(tmp_path / "split"), ranking_evals=2, rating_evals=2,
                        max_iter=2, spark_master="local[2]")
    client = mlflow.MlflowClient(own_store)
    found = client.search_runs([client.get_experiment_by_name("recsys").experiment_id])
    stages = [r.data.tags.get("recsys.stage") for r in found]
    assert [r.info.run_name for r in found if r.data.tags.get("recsys.stage") == "main"] == ["main"]
    for stage in ("main", "split", "baseline", "als_search", "promote", "recommend", "twins"):
        assert stage in stages, stage
    assert stages.count("als_search") == 2 and stages.count("promote") == 2

    for role, name, metric in (("ranking", "recsys-als", "precision_at_k"),
                               ("rating", "recsys-als-ratings", "rmse")):
        search, decision = out[f"{role}_search"], out[f"{role}_promote"]
        assert decision["model_name"] == name and decision["objective"] == metric
        assert search["objective"] == metric
        [found] = client.search_model_versions(f"name='{name}'")
        version = client.get_model_version(name, found.version)  # search results carry no aliases
        assert version.tags["recsys.objective"] == metric
        assert version.run_id == search["best_run_id"]
        # the gate: champion exactly when the candidate beats its baseline on test (no champion before)
        candidate, baseline = decision["candidate_score"], decision["baseline_score"]
        assert candidate == pytest.approx(search["test"][metric])
        assert baseline == pytest.approx(search["baselines"][f"baseline_test_{metric}"])
        beats = candidate < baseline if metric == "rmse" else candidate > baseline
        assert decision["decision"] == ("promoted" if beats else "kept"), decision["reason"]
        assert sorted(version.aliases) == (["challenger", "champion"] if beats else ["challenger"])

    # the main run tells the story at a glance: its own headline metrics, taken from the runs that
    # made them, its description, its figure; the experiment opens in MLflow's training view
    experiment = client.get_experiment_by_name("recsys")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([experiment.experiment_id])  # (`found` is a model version by now)
    [main] = [r for r in runs if r.data.tags.get("recsys.stage") == "main"]
    metrics, note = main.data.metrics, main.data.tags["mlflow.note.content"]
    for role, metric, base in (("ranking", "precision_at_k", "popularity"), ("rating", "rmse", "bias")):
        search_run = client.get_run(out[f"{role}_search"]["run_id"])
        decision = out[f"{role}_promote"]
        assert metrics[f"{role}/{base}_test_{metric}"] == search_run.data.metrics[f"baseline_test_{metric}"]
        if decision["decision"] == "promoted":
            champion = client.get_model_version_by_alias(decision["model_name"], "champion")
            assert metrics[f"{role}/champion_test_{metric}"] == search_run.data.metrics[f"test_{metric}"] \
                == float(champion.tags[f"test_{metric}"])
            assert decision["reason"] in champion.description and champion.tags["decision"] == "promoted"
            assert f"**{decision['model_name']} v{decision['version']} is `@champion`**" in note
        else:
            assert f"{role}/champion_test_{metric}" not in metrics  # a fresh store: no champion to report
            assert f"**{decision['model_name']} v{decision['version']} not promoted**" in note
        assert f"Why: {decision['reason']}." in note
    [twins_run] = [r for r in runs if r.data.tags.get("recsys.stage") == "twins"]
    for key in ("twins_pearson_mean", "random_pearson_mean"):
        assert metrics[f"twins/{key}"] == twins_run.data.metrics[key]
    stages = ("split", "baseline", "ranking_search", "ranking_promote", "rating_search", "rating_promote",
              "recommend", "twins")
    assert all(metrics[f"wall_seconds/{stage}"] > 0 for stage in stages)
    took = (main.info.end_time - main.info.start_time) / 1000
    assert sum(metrics[f"wall_seconds/{stage}"] for stage in stages) <= took
    # the shared runs-table view main's link opens: the headline metrics as columns
    shared = json.loads(experiment.tags["mlflow.sharedViewState.recsys-headline"])
    assert shared == {"selectedColumns": [f"metrics.`{key}`" for key in sorted(metrics)
                                          if not key.startswith("wall_seconds/")]}
    assert "champions_vs_baselines.png" in {a.path for a in client.list_artifacts(main.info.run_id)}

    # batch lists: every training user, k=10 rows each, none of them already rated in train
    version = out["ranking_promote"]["version"]
    recs = pd.read_parquet(tmp_path / "recommendations" / f"recsys-als-v{version}")  # beside the split
    assert out["recommend"]["counts"]["rows"] == len(recs)
    train = pd.read_parquet(tmp_path / "split" / "train")
    assert recs["userId"].nunique() == train["userId"].nunique() == 60
    assert len(recs) == 60 * 10 and set(recs["rank"]) == set(range(1, 11))
    assert not len(recs.merge(train, on=["userId", "movieId"]))
