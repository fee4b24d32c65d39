"""A team's tracking server: `mlflow server` on a real PostgreSQL, serving the artifacts itself,
and `mlflow run <checkout> -e main` against it through ``MLFLOW_TRACKING_URI=http://...`` from
another working directory. One `main` run (tiny release) is shared by the checks below: the runs
and their metrics are in PostgreSQL, the registry holds both champions with their aliases, and
the champions load and answer through the server's artifact proxy.

PostgreSQL comes from the Debian package ``postgresql`` (binaries in /usr/lib/postgresql/<v>/bin;
``.ci/run`` installs it); without it these tests skip and say so."""

from __future__ import annotations

import contextlib

import pytest

from tests.support.e2e import mlflow_run
from tests.support.services import mlflow_server, postgresql
from tests.support.tiny_movielens import write_tiny_movielens

pytestmark = [pytest.mark.server, pytest.mark.e2e]

EXPERIMENT = "recsys"
K = 10
N_MOVIES = 60
STAGES = ("split", "baseline", "als_search", "promote", "recommend", "twins")
ROLES = {"recsys-als": "precision_at_k", "recsys-als-ratings": "rmse"}


@pytest.fixture(scope="module")
def team_server(tmp_path_factory):
    """(server URL, PostgreSQL URI, work folder, `main`'s CompletedProcess), after one `main`."""
    with contextlib.ExitStack() as stack:
        try:
            backend_uri = stack.enter_context(postgresql())
        except LookupError as err:
            pytest.skip(f"PostgreSQL tracking-server test: {err}")
        work = tmp_path_factory.mktemp("team-server")
        url = stack.enter_context(mlflow_server(work / "server", backend_store_uri=backend_uri))
        # 24 ratings a user: twins' default min_ratings (20) keeps every user; most from the half
        # of the catalogue the user likes, so the implicit recommender has groups to find
        data = write_tiny_movielens(work / "tiny", n_movies=N_MOVIES, per_user=24, own_share=0.8)
        caller = work / "caller"  # neither the checkout nor the server's folder
        caller.mkdir()
        done = mlflow_run("main", url, f"data={data}", f"split_dir={work / 'split'}", "ranking_evals=2",
                          "rating_evals=2", "max_iter=3", options=("--experiment-name", EXPERIMENT),
                          cwd=str(caller), timeout=1500)
        assert done.returncode == 0, done.stderr[-4000:]
        yield url, backend_uri, work, done


@pytest.fixture()
def client(team_server, monkeypatch):
    import mlflow

    url = team_server[0]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    return mlflow.MlflowClient(url)


def _runs(client):
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


def test_main_runs_and_metrics_are_stored_in_postgresql(team_server, client):
    import sqlalchemy

    url, backend_uri, work, _ = team_server
    found = _runs(client)
    [main] = [r for r in found if r.data.tags.get("recsys.stage") == "main"]
    stages = [r.data.tags.get("recsys.stage") for r in found]
    for stage in STAGES:
        assert stage in stages, stage
    assert stages.count("als_search") == 2 and stages.count("promote") == 2
    assert all(r.info.status == "FINISHED" for r in found), [(r.info.run_name, r.info.status) for r in found]
    nested = [r for r in found if r.data.tags.get("recsys.stage") in STAGES]
    assert all(r.data.tags.get("mlflow.parentRunId") == main.info.run_id for r in nested)

    by_stage = {r.data.tags["recsys.stage"]: r for r in found if "recsys.stage" in r.data.tags}
    split = by_stage["split"].data.metrics
    assert split["train_users"] == 60  # write_tiny_movielens: 60 users, all in train
    baseline = by_stage["baseline"].data.metrics
    assert 0.0 <= baseline["val_precision_at_k"] <= 1.0 and 0.0 < baseline["val_bias_rmse"] < 4.5
    trials = [r for r in found if r.data.tags.get("recsys.stage") == "als_trial"]
    assert len(trials) == 4  # 2 ranking + 2 rating trials
    for trial in trials:
        metrics = trial.data.metrics
        assert 0.0 <= metrics.get("val_precision_at_k", 0.0) <= 1.0
        assert 0.0 < metrics.get("val_rmse", 1.0) < 4.5
    # the artifacts went through the server's proxy into its destination, nowhere else
    assert all(r.info.artifact_uri.startswith("mlflow-artifacts:") for r in found)
    stored = work / "server" / "artifacts"
    assert any(stored.rglob("MLmodel")), "no model under the server's --artifacts-destination"

    # and the rows are PostgreSQL's: the server's own tables, read with the same driver
    engine = sqlalchemy.create_engine(backend_uri)
    try:
        with engine.connect() as conn:
            assert engine.dialect.name == "postgresql"
            ids = {row[0] for row in conn.execute(sqlalchemy.text("select run_uuid from runs"))}
            names = {row[0] for row in conn.execute(sqlalchemy.text("select name from registered_models"))}
            aliases = set(conn.execute(sqlalchemy.text("select name, alias from registered_model_aliases")))
    finally:
        engine.dispose()
    assert {r.info.run_id for r in found} <= ids
    assert names >= set(ROLES)
    assert {(name, "champion") for name in ROLES} <= aliases


def test_the_registry_holds_both_champions_with_their_aliases(team_server, client):
    found = _runs(client)
    searches = {r.info.run_id: r for r in found if r.data.tags.get("recsys.stage") == "als_search"}
    for name, objective in ROLES.items():
        champion = client.get_model_version_by_alias(name, "champion")
        assert "challenger" in champion.aliases and "champion" in champion.aliases
        assert champion.tags["recsys.objective"] == objective
        # the version is the best trial of the search that made it, and it beat the baseline on
        # test (the gate: the tiny release has two taste groups that popularity and biases miss)
        search = searches[champion.tags["recsys.source_run_id"]]
        assert champion.run_id == search.data.tags["recsys.best_run_id"]
        score, baseline = search.data.metrics[f"test_{objective}"], \
            search.data.metrics[f"baseline_test_{objective}"]
        assert score < baseline if objective == "rmse" else score > baseline
        assert champion.source.startswith(("mlflow-artifacts:", "models:/"))


def test_champions_load_and_answer_through_the_artifact_proxy(team_server, client, tmp_path):
    import math

    import mlflow
    import pandas as pd

    work = team_server[2]
    train = pd.read_parquet(work / "split" / "train")
    users = sorted(train["userId"].unique())[:5]
    recommender = mlflow.pyfunc.load_model("models:/recsys-als@champion")
    lists = recommender.predict(pd.DataFrame({"userId": [*users, 999_999]}), params={"k": K})
    for user in users:
        mine = lists[lists["userId"] == user]
        assert list(mine["rank"]) == list(range(1, K + 1)) and (mine["source"] == "model").all()
        seen = set(train.loc[train["userId"] == user, "movieId"])
        assert not seen & set(mine["movieId"]), user  # nothing the user already rated
        assert mine["score"].is_monotonic_decreasing
    # an unknown user gets the popularity list, not an error
    unknown = lists[lists["userId"] == 999_999]
    assert len(unknown) == K and (unknown["source"] == "popularity").all()

    # the rating predictor: one rating per pair, on the rating scale, for unknown ids too
    predictor = mlflow.pyfunc.load_model("models:/recsys-als-ratings@champion")
    scores = predictor.predict(pd.DataFrame({"userId": [users[0], users[1], 999_999],
                                             "movieId": [1, 2, 1]}))["score"]
    assert len(scores) == 3 and all(0.5 <= s <= 5.0 and not math.isnan(s) for s in scores)
    # the tiny release's taste groups: even users like the first half of the movies, odd users
    # the second half
    even = next(u for u in users if u % 2 == 0)
    odd = next(u for u in users if u % 2 == 1)
    first, second = 3, N_MOVIES // 2 + 3
    pairs = predictor.predict(pd.DataFrame({"userId": [even, even, odd, odd],
                                            "movieId": [first, second, first, second]}))
    liked_even, disliked_even, disliked_odd, liked_odd = pairs["score"]
    assert liked_even > disliked_even + 1.0 and liked_odd > disliked_odd + 1.0
