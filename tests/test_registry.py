"""Promotion rules on a real (temporary) registry: better -> champion, worse -> stays challenger,
force, idempotent, incomparable champions, and both objective directions. The runs are
stand-ins carrying what a search logs (tags, test metrics, a ``model`` artifact); the real
search -> promote -> load path is in tests/test_e2e_als.py."""

from __future__ import annotations

import uuid

import mlflow
import pytest

from recsys import registry
from recsys.errors import RecsysError


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    # one store for the module (creating an MLflow database takes seconds); tests use their
    # own experiment and model name
    tmp = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{tmp}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    yield uri, tmp
    mlflow.set_tracking_uri(None)


@pytest.fixture()
def client(store):
    uri, tmp = store
    name = uuid.uuid4().hex[:8]
    exp = mlflow.create_experiment(name, artifact_location=str(tmp / name))
    return mlflow.MlflowClient(uri), exp


def _search_run(exp, objective="rmse", value=0.9, split="s1", stage="als_search"):
    """A parent run whose best trial (a child) has the model and the test metrics."""
    with mlflow.start_run(experiment_id=exp) as parent:
        mlflow.set_tags({"recsys.stage": stage, "recsys.objective": objective})
        with mlflow.start_run(experiment_id=exp, nested=True) as child:
            mlflow.set_tags({"recsys.objective": objective, "recsys.split_digest": split,
                             "recsys.feedback": "explicit"})
            mlflow.log_params({"rank": 4, "reg_param": 0.1})
            mlflow.log_metrics({f"test_{objective}": value, f"val_{objective}": value})
            mlflow.log_text("artifact_path: model\nflavors: {}\n", "model/MLmodel")
        mlflow.set_tag("recsys.best_run_id", child.info.run_id)
    return parent.info.run_id, child.info.run_id


def _promote(client, run_id, force=False, name="recsys-als"):
    c, exp = client
    return registry.promote(c, registry.find_candidate(c, exp, run_id), name, force=force)


def _aliases(client, name="recsys-als"):
    c, _ = client
    return {alias: int(version) for alias, version in c.get_registered_model(name).aliases.items()}


def test_promotion_rules_rmse(client):
    c, exp = client
    assert not c.search_registered_models("name='recsys-als'")
    first, first_model = _search_run(exp, value=0.90)
    out = _promote(client, first)
    assert (out["decision"], out["version"], out["registered"]) == ("promoted", 1, True)
    assert _aliases(client) == {"champion": 1, "challenger": 1}
    tags = c.get_model_version("recsys-als", "1").tags
    assert float(tags["test_rmse"]) == 0.90 and tags["recsys.objective"] == "rmse"
    assert tags["recsys.source_run_id"] == first
    assert c.get_model_version("recsys-als", "1").run_id == first_model

    better, _ = _search_run(exp, value=0.85)  # lower RMSE wins
    out = _promote(client, better)
    assert (out["decision"], out["version"], out["previous_version"]) == ("promoted", 2, 1)
    assert _aliases(client) == {"champion": 2, "challenger": 2, "previous": 1}

    worse, _ = _search_run(exp, value=0.88)
    out = _promote(client, worse)
    assert (out["decision"], out["version"]) == ("kept", 3)
    assert "does not beat" in out["reason"]
    assert _aliases(client) == {"champion": 2, "challenger": 3, "previous": 1}

    # idempotent: the same run again registers nothing and changes nothing
    again = _promote(client, worse)
    assert (again["decision"], again["version"], again["registered"]) == ("kept", 3, False)
    assert len(c.search_model_versions("name='recsys-als'")) == 3

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
    out = _promote(client, rmse_run, name=name)
    assert out["decision"] == "kept" and "has no test_rmse" in out["reason"]


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
