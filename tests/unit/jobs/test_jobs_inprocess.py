"""Every entry point's job function (``recsys.jobs``) called in-process, on tiny data, in the test
session's one SparkSession: what ``mlflow run . -e <entry>`` runs, without the two Python
start-ups and the JVM per run that tests/test_e2e_*.py pay for (in the full suite).

One ``split`` serves the jobs that read a split (baseline, als, als_search + promote); twins and
synthesize need none. ``pipeline`` (the `main` entry point: every stage again, plus two searches
and ``recommend``) costs several times all of these together: tests/test_main_pipeline.py calls it
in-process, marked ``slow``; tests/test_batch.py calls ``recommend``. The known answers come from
the tiny release itself (tests/tiny_movielens.py), read with plain Python.
"""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from itertools import combinations
from pathlib import Path
from types import SimpleNamespace

import pytest

EXPERIMENT = "jobs-inprocess"
#: No extra Spark settings: a job called inside a running session keeps the session's own.
CONF = ()
TINY_SPACE = ("explicit:\n  rank: {dist: quniform, low: 2, high: 4, q: 1}\n"
              "  reg_param: {dist: loguniform, low: 0.05, high: 0.5}\n")
USERS, PER_USER = 60, 24  # >= 20 ratings each: the twins job's default min_ratings keeps them all


def _ratings_csv(data: str) -> list[tuple[int, int, float]]:
    with open(Path(data) / "ratings.csv", newline="") as fh:
        return [(int(r["userId"]), int(r["movieId"]), float(r["rating"])) for r in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store of this module's own: promote registers models under the default names, which no
    other test's promotions may meet."""
    import mlflow

    tmp = tmp_path_factory.mktemp("jobs")
    uri = f"sqlite:///{tmp}/mlflow.db"
    exp_id = mlflow.MlflowClient(uri).create_experiment(EXPERIMENT, artifact_location=str(tmp / "artifacts"))
    return SimpleNamespace(uri=uri, exp_id=exp_id, tmp=tmp)


def _job_env(mp, store, cwd):
    mp.setenv("MLFLOW_TRACKING_URI", store.uri)
    mp.setenv("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
    mp.chdir(cwd)  # relative outputs (./mlruns) land there, never in the checkout


@pytest.fixture(scope="module")
def jobs_env(store):
    """The module's store and experiment in the environment, its folder the working directory."""
    with pytest.MonkeyPatch.context() as mp:
        _job_env(mp, store, store.tmp)
        yield store


@pytest.fixture(scope="module")
def split_run(spark, jobs_env):
    """``jobs.split`` of the 60-user tiny release; the other jobs here read this split."""
    import mlflow

    from recsys import jobs
    from tests.support.tiny_movielens import write_tiny_movielens

    store = jobs_env
    data = write_tiny_movielens(store.tmp / "tiny", n_users=USERS, per_user=PER_USER)
    split_dir = str(store.tmp / "split")
    manifest = jobs.split(data=data, split_dir=split_dir, spark_conf=CONF)
    client = mlflow.MlflowClient(store.uri)
    [run] = client.search_runs([store.exp_id], "tags.`recsys.stage` = 'split'")
    return SimpleNamespace(data=data, split_dir=split_dir, client=client, run=run, manifest=manifest,
                           store=store)


def _runs(split_run, stage):
    return split_run.client.search_runs([split_run.store.exp_id], f"tags.`recsys.stage` = '{stage}'",
                                        order_by=["attributes.start_time ASC"])


def test_split_job_logs_counts_that_add_up_to_the_release(spark, split_run):
    from recsys.data import load_split

    run = split_run.run
    assert run.info.status == "FINISHED"
    m = run.data.metrics
    assert m["train_rows"] + m["validation_rows"] + m["test_rows"] == USERS * PER_USER
    assert m["train_users"] == USERS
    assert m["train_rows"] / (USERS * PER_USER) == pytest.approx(0.8, abs=0.05)
    assert run.data.params["strategy"] == "random" and run.data.params["fractions"] == "0.8,0.1,0.1"
    assert run.info.run_name == "split random 0.8/0.1/0.1 seed 42"  # what it is, not MLflow's random name
    logged = json.loads(Path(split_run.client.download_artifacts(
        run.info.run_id, "manifest.json", str(split_run.store.tmp / "dl-split"))).read_text())
    on_disk = load_split(spark, split_run.split_dir).manifest
    assert logged["digests"] == on_disk["digests"] == split_run.manifest["digests"]
    assert logged["input"]["rows"] == USERS * PER_USER
    assert {i.tags[0].value for i in run.inputs.dataset_inputs} == {"train", "validation", "test"}
    for i in run.inputs.dataset_inputs:  # the profile is the exact count, not MLflow's estimate
        part = i.tags[0].value
        assert json.loads(i.dataset.profile) == {"approx_count": int(m[f"{part}_rows"])}
        assert i.dataset.digest == split_run.manifest["digests"][part].split("-", 1)[1][:16]


def test_baseline_job_counts_every_validation_user_and_ranks_by_count(spark, split_run):
    from recsys import jobs
    from recsys.data import load_split

    m = jobs.baseline(data=split_run.data, split_dir=split_run.split_dir, spark_conf=CONF)
    [run] = _runs(split_run, "baseline")
    assert run.info.status == "FINISHED" and run.data.metrics["val_precision_at_k"] == m["val_precision_at_k"]
    assert run.info.run_name == "baseline popularity count"
    parts = load_split(spark, split_run.split_dir)
    validation_users = parts.validation.select("userId").distinct().count()
    assert m["val_n_users_evaluated"] + m["val_n_users_no_relevant"] == validation_users
    assert 0 < m["val_precision_at_k"] <= 1 and 0 < m["val_ndcg_at_k"] <= 1
    assert "val_rmse" not in m and 0 < m["val_bias_rmse"] < 2  # count popularity predicts no ratings
    table = split_run.client.download_artifacts(run.info.run_id, "top100.csv",
                                                str(split_run.store.tmp / "dl-baseline"))
    with open(table, newline="") as fh:
        top = list(csv.DictReader(fh))
    counts = Counter(str(r["movieId"]) for r in parts.train.select("movieId").collect())  # <= 1,440 rows
    assert len(top) == len(counts) <= 40  # every movie of the release, fewer than 100
    assert [int(r["rank"]) for r in top] == list(range(1, len(top) + 1))
    assert {r["movieId"]: int(r["n_ratings"]) for r in top} == dict(counts)
    assert [int(r["n_ratings"]) for r in top] == sorted(counts.values(), reverse=True)


def test_search_picks_its_best_trial_and_promote_makes_it_champion(split_run):
    from recsys import jobs

    space = split_run.store.tmp / "space.yaml"
    space.write_text(TINY_SPACE)
    summary = jobs.als_search(data=split_run.data, split_dir=split_run.split_dir, max_evals=2, max_iter=3,
                              seed=5, space=str(space), spark_conf=CONF)
    [search] = _runs(split_run, "als_search")
    trials = _runs(split_run, "als_trial")
    assert summary["run_id"] == search.info.run_id and search.info.status == "FINISHED"
    assert search.data.tags["recsys.objective"] == "rmse" and search.data.metrics["trials_ok"] == 2
    assert {t.data.tags["mlflow.parentRunId"] for t in trials} == {search.info.run_id} and len(trials) == 2
    best = min(trials, key=lambda t: t.data.metrics["val_rmse"])
    assert search.data.tags["recsys.best_run_id"] == best.info.run_id
    # the parent shows its best trial's objective, validation and test, as its own metrics
    assert search.data.metrics["val_rmse"] == best.data.metrics["val_rmse"]
    assert search.data.metrics["test_rmse"] == best.data.metrics["test_rmse"]
    assert search.info.run_name == "als_search explicit rmse 2 trials"
    # counts every trial shares are on the parent only: the compare page lists quality metrics
    assert search.data.metrics["val_n_users_evaluated"] > 0 < search.data.metrics["test_n_users_evaluated"]
    for trial in trials:
        assert not {"val_n_users_evaluated", "val_n_users_no_relevant", "test_n_users_evaluated",
                    "test_n_users_no_relevant"} & set(trial.data.metrics), trial.data.metrics
        assert trial.data.params["max_iter"] == "3" and 2 <= int(trial.data.params["rank"]) <= 4
        assert 0 < trial.data.metrics["val_rmse"] < 2 and trial.data.metrics["val_coverage"] == 1.0
    # two taste groups: ALS on the bias baseline's residuals beats the bias baseline on test
    assert search.data.metrics["test_rmse"] < search.data.metrics["baseline_test_rmse"]

    result = jobs.promote(run_id=search.info.run_id)
    [promote] = _runs(split_run, "promote")
    assert promote.data.params["model_run_id"] == best.info.run_id
    assert promote.info.run_name == f"promote recsys-als-ratings from run {search.info.run_id[:8]}"
    assert result["decision"] == promote.data.tags["recsys.decision"] == "promoted"  # first, beats baseline
    assert promote.data.params["registered_model_name"] == "recsys-als-ratings"  # an RMSE search
    champion = split_run.client.get_model_version_by_alias("recsys-als-ratings", "champion")
    assert champion.run_id == best.info.run_id
    assert int(champion.version) == promote.data.metrics["model_version"] == 1
    # the version: the score and baseline it was judged by, in tags and in words
    assert float(champion.tags["test_rmse"]) == search.data.metrics["test_rmse"]
    assert float(champion.tags["baseline_test_rmse"]) == search.data.metrics["baseline_test_rmse"]
    assert champion.tags["decision"] == "promoted" and champion.description.startswith("Champion: ")
    assert f"search run `{search.info.run_id}`" in champion.description
    # the decision history, as a table on the promote run
    history = split_run.client.download_artifacts(promote.info.run_id, "promotion_history.csv",
                                                  str(split_run.store.tmp / "dl-promote"))
    with open(history, newline="") as fh:
        [row] = list(csv.DictReader(fh))
    assert (row["decision"], row["version"], row["promote_run_id"]) == ("promoted", "1", promote.info.run_id)
    assert float(row["candidate_score"]) == search.data.metrics["test_rmse"] \
        == promote.data.metrics["candidate_test_rmse"]


def test_twins_job_reports_exact_jaccard_and_full_recall(split_run):
    from recsys import jobs

    m = jobs.twins(data=split_run.data, min_ratings=5, n_pairs=20, n_hashes=32, n_random=20,
                   method="banded", compare_exact=True, seed=3, spark_conf=CONF)
    [run] = _runs(split_run, "twins")
    assert run.info.status == "FINISHED" and run.data.metrics["users_kept"] == m["users_kept"] == USERS
    assert run.info.run_name == "twins minhash banded 20 pairs"
    sets = defaultdict(set)
    for user, movie, _ in _ratings_csv(split_run.data):
        sets[user].add(movie)
    exact = {(a, b): len(sets[a] & sets[b]) / len(sets[a] | sets[b])
             for a, b in combinations(sorted(sets), 2)}  # 1,770 pairs
    table = split_run.client.download_artifacts(run.info.run_id, "twins.csv",
                                                str(split_run.store.tmp / "dl-twins"))
    with open(table, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 20 == m["twins_pearson_count"]
    pairs = [(int(r["userA"]), int(r["userB"])) for r in rows]
    assert len(set(pairs)) == 20 and all(a < b for a, b in pairs)
    for (a, b), row in zip(pairs, rows, strict=True):
        assert float(row["jaccard"]) == pytest.approx(exact[(a, b)], abs=1e-12), (a, b)
    jaccards = [float(r["jaccard"]) for r in rows]
    assert jaccards == sorted(jaccards, reverse=True)
    truth = sorted(exact.values(), reverse=True)
    assert m["top_jaccard"] == pytest.approx(truth[0], abs=1e-12)
    assert m["recall"] == 1.0 and jaccards == pytest.approx(truth[:20], abs=1e-12)


def test_als_job_beats_the_bias_baseline_on_the_same_split(spark, split_run):
    from recsys import jobs
    from recsys.data import load_split
    from recsys.evaluation import rating_metrics
    from recsys.models import BiasBaseline

    out = jobs.als(data=split_run.data, split_dir=split_run.split_dir, rank=3, max_iter=3, seed=3,
                   spark_conf=CONF)
    run = split_run.client.get_run(out["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["recsys.feedback"] == "explicit"
    assert run.info.run_name == "als explicit rank=3 reg_param=0.1"
    assert run.data.params["rank"] == "3" and run.data.params["split_dir"] == split_run.split_dir
    assert run.data.metrics["val_rmse"] == pytest.approx(out["metrics"]["rmse"])
    assert run.data.metrics["val_coverage"] == 1.0
    parts = load_split(spark, split_run.split_dir)
    bias_rmse = rating_metrics(BiasBaseline().fit(parts.train).predict(parts.validation))["rmse"]
    assert out["metrics"]["rmse"] < bias_rmse  # two taste groups: the factors see them, biases cannot
    assert {a.path for a in split_run.client.list_artifacts(out["run_id"], "model")} >= {"model/MLmodel"}


def test_synthesize_job_writes_a_release_the_reader_loads(spark, store, tmp_path, monkeypatch):
    import mlflow

    from recsys import jobs
    from recsys.data import load_movielens

    _job_env(monkeypatch, store, tmp_path)
    output = str(tmp_path / "synthetic")
    stats = jobs.synthesize(output=output, n_users=40, n_movies=60, n_ratings=400, n_twins=2, seed=5,
                            spark_conf=CONF)
    assert abs(stats["ratings"] - 400) <= 0.03 * 400
    loaded = load_movielens(spark, output, cache_dir=str(tmp_path / "cache"), progress=lambda _m: None)
    assert loaded.ratings.count() == stats["ratings"]
    assert loaded.ratings.select("userId").distinct().count() == 40 and loaded.movies.count() == 60
    client = mlflow.MlflowClient(store.uri)
    [run] = client.search_runs([store.exp_id], "tags.`recsys.stage` = 'synthesize'")
    assert run.info.status == "FINISHED" and run.data.metrics["ratings"] == stats["ratings"]
    assert run.data.params["n_users"] == "40" and run.data.params["output"] == output
    planted = json.loads(Path(client.download_artifacts(run.info.run_id, "planted_twins.json",
                                                        str(tmp_path / "dl"))).read_text())
    assert len(planted) == 2 and planted == stats["planted_twins"]

