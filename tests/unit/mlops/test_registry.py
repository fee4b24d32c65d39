"""Promotion rules on a real (temporary) registry: better -> champion, worse -> stays challenger,
force, idempotent, incomparable champions, both objective directions, the baseline gate, the
history, and the refusal to compare models judged by different metrics. The runs are
stand-ins carrying what a search logs (tags, test metrics, a ``model`` artifact); the real
search -> promote -> load path is in tests/test_e2e_als.py."""

from __future__ import annotations

import uuid

import mlflow
import pytest

from recsys.core import RecsysError
from recsys.mlops import registry


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    # one store for the module (creating an MLflow database takes seconds); tests use their
    # own experiment and model name
    tmp = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{tmp}/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        yield uri, tmp
        # None also drops MLFLOW_TRACKING_URI from the environment: the context then restores the
        # session's store, so later tests never fall back to ./mlflow.db in the checkout
        mlflow.set_tracking_uri(None)


@pytest.fixture()
def client(store):
    uri, tmp = store
    name = uuid.uuid4().hex[:8]
    exp = mlflow.create_experiment(name, artifact_location=str(tmp / name))
    return mlflow.MlflowClient(uri), exp


#: Baselines every stand-in candidate beats unless told otherwise (RMSE is minimised).
BASELINE = {"rmse": 1.0, "precision_at_k": 0.05}


def _search_run(exp, objective="rmse", value=0.9, split="s1", stage="als_search", baseline="default"):
    """A parent run (with the baseline's test metric, as a search logs it) whose best trial (a
    child) has the model and the test metrics. ``baseline=None``: the search logged none."""
    baseline = BASELINE.get(objective) if baseline == "default" else baseline
    with mlflow.start_run(experiment_id=exp) as parent:
        mlflow.set_tags({"recsys.stage": stage, "recsys.objective": objective})
        if baseline is not None:
            mlflow.log_metric(f"baseline_test_{objective}", baseline)
        with mlflow.start_run(experiment_id=exp, nested=True) as child:
            mlflow.set_tags({"recsys.objective": objective, "recsys.split_digest": split,
                             "recsys.feedback": "explicit"})
            mlflow.log_params({"rank": 4, "reg_param": 0.1})
            mlflow.log_metrics({f"test_{objective}": value, f"val_{objective}": value})
            mlflow.log_text("artifact_path: model\nflavors: {}\n", "model/MLmodel")
        mlflow.set_tag("recsys.best_run_id", child.info.run_id)
    return parent.info.run_id, child.info.run_id


def _promote(client, run_id, force=False, name="recsys-als-ratings"):
    """Promote ``run_id``'s best model as the promote entry point does, from a run of its own;
    the result with that run's id."""
    c, exp = client
    promote_run = c.create_run(exp, tags={"recsys.stage": "promote"}).info.run_id
    out = registry.promote(c, registry.find_candidate(c, exp, run_id), name, force=force,
                           promote_run_id=promote_run)
    c.set_terminated(promote_run)
    return {**out, "promote_run_id": promote_run}


def _aliases(client, name="recsys-als-ratings"):
    c, _ = client
    return {alias: int(version) for alias, version in c.get_registered_model(name).aliases.items()}


def test_promotion_rules_rmse(client):
    c, exp = client
    assert not c.search_registered_models("name='recsys-als-ratings'")
    first, first_model = _search_run(exp, value=0.90)
    out = _promote(client, first)
    assert (out["decision"], out["version"], out["registered"]) == ("promoted", 1, True)
    assert _aliases(client) == {"champion": 1, "challenger": 1}
    v1 = c.get_model_version("recsys-als-ratings", "1")
    # a few short tags: what the rules compare, what a reader scans; no params, no metric dump
    assert v1.tags == {"decision": "promoted", "test_rmse": "0.9", "baseline_test_rmse": "1.0",
                       "recsys.objective": "rmse", "recsys.feedback": "explicit",
                       "recsys.split_digest": "s1", "recsys.source_run_id": first}
    assert v1.run_id == first_model
    # and in words: the decision, the scores, the baseline, the source runs
    assert v1.description.startswith("Champion: test rmse **0.9000** against the bias baseline's 1.0000 "
                                     "(no champion before); decided 20")
    assert "Why: no champion yet; test rmse 0.90000 beats the baseline's 1.00000." in v1.description
    assert f"best trial run `{first_model}` of search run `{first}`" in v1.description
    assert f"promote run `{out['promote_run_id']}`" in v1.description
    assert "Model: ALS rank=4, reg_param=0.1." in v1.description
    model = c.get_registered_model("recsys-als-ratings")
    assert model.tags == {} and "Rating predictor" in model.description  # no JSON blobs on the model page

    better, _ = _search_run(exp, value=0.85)  # lower RMSE wins
    out = _promote(client, better)
    assert (out["decision"], out["version"], out["previous_version"]) == ("promoted", 2, 1)
    assert _aliases(client) == {"champion": 2, "challenger": 2, "previous": 1}
    v1, v2 = (c.get_model_version("recsys-als-ratings", v) for v in "12")
    assert "against the bias baseline's 1.0000 and champion v1's 0.9000; decided" in v2.description
    assert v1.tags["decision"] == "replaced" and v1.description.startswith("Replaced as champion by v2 on 20")
    assert "\n\nChampion: test rmse" in v1.description  # what it was, kept below

    worse, _ = _search_run(exp, value=0.88)
    out = _promote(client, worse)
    assert (out["decision"], out["version"]) == ("kept", 3)
    assert "does not beat" in out["reason"]
    v3 = c.get_model_version("recsys-als-ratings", "3")
    assert v3.tags["decision"] == "kept" and v3.description.startswith("Not promoted (stays @challenger): ")
    assert "test rmse 0.88000 does not beat champion v2's 0.85000" in v3.description
    assert _aliases(client) == {"champion": 2, "challenger": 3, "previous": 1}

    # idempotent: the same run again registers nothing and changes nothing
    again = _promote(client, worse)
    assert (again["decision"], again["version"], again["registered"]) == ("kept", 3, False)
    assert len(c.search_model_versions("name='recsys-als-ratings'")) == 3

    forced = _promote(client, worse, force=True)
    assert (forced["decision"], forced["version"], forced["registered"]) == ("promoted", 3, False)
    assert _aliases(client) == {"champion": 3, "challenger": 3, "previous": 2}
    assert _promote(client, worse)["decision"] == "already_champion"
    assert _aliases(client) == {"champion": 3, "challenger": 3, "previous": 2}


def test_higher_is_better_for_ranking_objectives_and_other_splits_do_not_compare(client):
    _, exp = client
    name = f"m-{uuid.uuid4().hex[:6]}"
    base, _ = _search_run(exp, objective="precision_at_k", value=0.10)
    assert _promote(client, base, name=name)["decision"] == "promoted"
    lower, _ = _search_run(exp, objective="precision_at_k", value=0.08)
    assert _promote(client, lower, name=name)["decision"] == "kept"
    higher, _ = _search_run(exp, objective="precision_at_k", value=0.12)
    assert _promote(client, higher, name=name)["decision"] == "promoted"
    elsewhere, _ = _search_run(exp, objective="precision_at_k", value=0.50, split="s2")
    out = _promote(client, elsewhere, name=name)
    assert out["decision"] == "kept" and "another split" in out["reason"]
    rmse_run, _ = _search_run(exp, objective="rmse", value=0.5)
    with pytest.raises(RecsysError, match=f"model_name={name}: the candidate is judged by rmse but "
                                          r"champion v3 by precision_at_k"):
        _promote(client, rmse_run, name=name)
    with pytest.raises(RecsysError, match="judged by rmse but champion"):  # force does not mix roles
        _promote(client, rmse_run, name=name, force=True)
    assert len(client[0].search_model_versions(f"name='{name}'")) == 4  # nothing registered


def test_default_names_split_the_two_roles(client):
    c, exp = client
    assert registry.default_model_name("rmse") == "recsys-als-ratings"
    assert registry.default_model_name("precision_at_k") == registry.default_model_name("ndcg_at_k") \
        == "recsys-als"
    ranking, _ = _search_run(exp, objective="ndcg_at_k", value=0.2, baseline=0.1)
    rating, _ = _search_run(exp, objective="rmse", value=0.8)
    for run, name in ((ranking, "recsys-als"), (rating, "recsys-als-ratings")):
        out = registry.promote(c, registry.find_candidate(c, exp, run))
        assert (out["model_name"], out["decision"]) == (name, "promoted")
        assert c.get_model_version_by_alias(name, "champion").tags["recsys.objective"] == out["objective"]


def test_baseline_gate_and_history(client):
    c, exp = client
    name = f"g-{uuid.uuid4().hex[:6]}"
    promote_runs = []

    def step(run, force=False):
        out = _promote(client, run, name=name, force=force)
        promote_runs.append(out["promote_run_id"])
        return out

    # no champion, but the popularity baseline is better: stays challenger
    loser, _ = _search_run(exp, objective="precision_at_k", value=0.06, baseline=0.064)
    out = step(loser)
    assert (out["decision"], out["baseline_score"]) == ("kept", 0.064)
    assert "does not beat the baseline's 0.06400" in out["reason"]
    assert _aliases(client, name) == {"challenger": 1}
    # a search that logged no baseline cannot pass the gate
    unknown, _ = _search_run(exp, objective="precision_at_k", value=0.2, baseline=None)
    out = step(unknown)
    assert out["decision"] == "kept" and "no baseline_test_precision_at_k" in out["reason"]
    # beats the baseline, no champion yet: promoted
    winner, _ = _search_run(exp, objective="precision_at_k", value=0.11, baseline=0.064)
    assert step(winner)["decision"] == "promoted"
    # beats the champion but not the baseline (a baseline that got better on the same split)
    tricky, _ = _search_run(exp, objective="precision_at_k", value=0.12, baseline=0.13)
    assert step(tricky)["decision"] == "kept"
    assert _aliases(client, name) == {"champion": 3, "challenger": 4}
    # force skips both gates
    assert step(loser, force=True)["decision"] == "promoted"
    # RMSE: lower is better, against the bias baseline
    rname = f"r-{uuid.uuid4().hex[:6]}"
    worse_than_bias, _ = _search_run(exp, objective="rmse", value=0.90, baseline=0.87)
    assert _promote(client, worse_than_bias, name=rname)["decision"] == "kept"
    better_than_bias, _ = _search_run(exp, objective="rmse", value=0.85, baseline=0.87)
    assert _promote(client, better_than_bias, name=rname)["decision"] == "promoted"

    history = registry.promotion_history(c, name)
    assert list(history.columns) == list(registry.HISTORY_COLUMNS)
    assert list(history["decision"]) == ["kept", "kept", "promoted", "kept", "promoted"]
    assert list(history["version"]) == [1, 2, 3, 4, 1]
    assert list(history["candidate_score"]) == [0.06, 0.2, 0.11, 0.12, 0.06]
    assert list(history["forced"]) == [False, False, False, False, True]
    assert history["champion_score"].tolist()[3:] == [0.11, 0.11]
    assert history["baseline_score"].tolist()[3] == 0.13
    assert list(history["source_run_id"]) == [loser, unknown, winner, tricky, loser]
    assert list(history["promote_run_id"]) == promote_runs
    assert history["time"].str.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$").all()
    assert history["time"].is_monotonic_increasing and set(history["model_name"]) == {name}
    reasons = history["reason"].tolist()
    assert "does not beat the baseline" in reasons[0] and "no baseline" in reasons[1]
    assert "no champion yet" in reasons[2] and "does not beat the baseline's 0.13000" in reasons[3]
    assert reasons[4] == "forced"
    assert registry.promotion_history(c, rname)["decision"].tolist() == ["kept", "promoted"]
    v1 = c.get_model_version(name, "1")  # the version keeps its latest decision, in words too
    assert v1.tags["decision"] == "promoted" and float(v1.tags["baseline_test_precision_at_k"]) == 0.064
    assert v1.description.startswith("Champion (forced: the baseline and champion gates were skipped): ")
    assert "Why: forced." in v1.description
    assert c.get_model_version(name, "3").tags["decision"] == "replaced"
    # the promote runs carry the rows (what promotion_history.csv is made of)
    last = c.get_run(promote_runs[-1]).data
    assert (last.tags["recsys.decision"], last.tags["recsys.registered_model"]) == ("promoted", name)
    assert last.metrics == {"model_version": 1.0, "champion_version": 3.0,
                            "candidate_test_precision_at_k": 0.06, "champion_test_precision_at_k": 0.11,
                            "baseline_test_precision_at_k": 0.064}
    assert c.get_registered_model(name).tags == {}


def test_default_is_the_latest_finished_search_and_errors_are_named(client):
    c, exp = client
    with pytest.raises(RecsysError, match="no finished als_search run"):
        registry.find_candidate(c, exp)
    _search_run(exp, value=0.9)
    latest, latest_model = _search_run(exp, value=0.95)
    _search_run(exp, value=0.7, stage="als")  # not a search: ignored by the default
    cand = registry.find_candidate(c, exp)
    assert (cand.source_run_id, cand.model_run_id, cand.score) == (latest, latest_model, 0.95)
    with pytest.raises(RecsysError, match="no such run"):
        registry.find_candidate(c, exp, "0" * 32)
    with mlflow.start_run(experiment_id=exp) as bare:
        mlflow.set_tag("recsys.objective", "rmse")
    with pytest.raises(RecsysError, match="has no test_rmse metric"):
        registry.find_candidate(c, exp, bare.info.run_id)
    with pytest.raises(RecsysError, match="model_name must be a non-empty"):
        registry.promote(c, cand, " ")


class _SeesTheDeadLockTogether:
    """A client on which both waiters read the dead lock before either acts on it (the race of
    issue 28): each thread's first look at the lock waits for the other's."""

    def __init__(self, client, lock):
        import threading

        self.client, self.lock = client, lock
        self.barrier, self.seen = threading.Barrier(2, timeout=10), set()

    def get_registered_model(self, name):
        import threading

        found = self.client.get_registered_model(name)
        if name == self.lock and threading.get_ident() not in self.seen:
            self.seen.add(threading.get_ident())
            self.barrier.wait()
        return found

    def __getattr__(self, name):
        return getattr(self.client, name)


def _hold(client, name, seconds, timeline, who, timeout=20.0):
    import time

    with registry.promotion_lock(client, name, timeout=timeout, poll=0.05):
        timeline.append((time.time(), who, +1))
        time.sleep(seconds)
        timeline.append((time.time(), who, -1))


def _most_inside(timeline) -> int:
    inside = most = 0
    for _, _, step in sorted(timeline):
        inside += step
        most = max(most, inside)
    return most


def test_two_waiters_that_see_the_same_dead_lock_do_not_both_take_it(client, monkeypatch):
    import threading
    import time

    mlflow_client, _ = client
    name = f"race-{uuid.uuid4().hex[:6]}"
    lock = name + registry.LOCK_SUFFIX
    mlflow_client.create_registered_model(lock)  # left by a killed promotion: no heartbeat
    monkeypatch.setattr(registry, "LOCK_STALE_SECONDS", 0.3)
    monkeypatch.setattr(registry, "LOCK_HEARTBEAT_SECONDS", 0.05, raising=False)  # live holders stay fresh
    time.sleep(0.5)
    racing, timeline = _SeesTheDeadLockTogether(mlflow_client, lock), []
    threads = [threading.Thread(target=_hold, args=(racing, name, 0.5, timeline, who)) for who in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(who for _, who, step in timeline if step > 0) == ["a", "b"]  # both got their turn
    assert _most_inside(timeline) == 1
    leftovers = [m.name for m in mlflow_client.search_registered_models() if m.name.startswith(lock)]
    assert leftovers == []  # no lock, no breaker left


def test_a_promotion_that_outlives_the_stale_time_keeps_its_lock(client, monkeypatch):
    import threading
    import time

    mlflow_client, _ = client
    name = f"long-{uuid.uuid4().hex[:6]}"
    monkeypatch.setattr(registry, "LOCK_STALE_SECONDS", 0.5)
    monkeypatch.setattr(registry, "LOCK_HEARTBEAT_SECONDS", 0.1, raising=False)
    timeline = []
    first = threading.Thread(target=_hold, args=(mlflow_client, name, 2.0, timeline, "long"))
    first.start()
    time.sleep(0.2)
    _hold(mlflow_client, name, 0.1, timeline, "next")
    first.join()
    assert _most_inside(timeline) == 1
    assert [who for _, who, _ in sorted(timeline)] == ["long", "long", "next", "next"]


def test_release_leaves_a_lock_that_is_no_longer_its_own(client):
    mlflow_client, _ = client
    name = f"own-{uuid.uuid4().hex[:6]}"
    lock = name + registry.LOCK_SUFFIX
    with registry.promotion_lock(mlflow_client, name):
        mlflow_client.delete_registered_model(lock)  # broken under it, and taken by another
        mlflow_client.create_registered_model(lock, tags={registry.TAG_LOCK_OWNER: "someone-else"})
    assert mlflow_client.get_registered_model(lock).tags[registry.TAG_LOCK_OWNER] == "someone-else"
    mlflow_client.delete_registered_model(lock)
