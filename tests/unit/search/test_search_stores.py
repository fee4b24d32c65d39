"""A search resumed against another tracking store (issue 16): its state was written with the
run ids of the first store, which the second has never seen.

The first test drives ``run_search`` and the tracking helpers the job uses with a stand-in for a
trial (no Spark): trials are re-logged once per store, switching back finds the first store's
runs again. The second (slow: two searches) runs ``jobs.als_search`` in-process on the session's
Spark and the tiny release, then again with one trial more against a second store: the re-logged
trials keep their results, the new parent sees every trial once, and only the restored best trial
is refitted (to log its model).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

TINY_SPACE = ("explicit:\n  rank: {dist: quniform, low: 2, high: 4, q: 1}\n"
              "  reg_param: {dist: loguniform, low: 0.05, high: 0.5}\n")
EXPERIMENT = "search-stores"


def _use_store(monkeypatch, tmp_path, name):
    import mlflow

    uri = f"sqlite:///{tmp_path / name}.db"
    client = mlflow.MlflowClient(uri)
    exp_id = client.create_experiment(EXPERIMENT, artifact_location=str(tmp_path / f"{name}-artifacts"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
    return client, exp_id


def _trials(client, exp_id, parent_id):
    runs = client.search_runs([exp_id], "tags.`recsys.stage` = 'als_trial'")
    assert all(r.data.tags["mlflow.parentRunId"] == parent_id for r in runs)
    return sorted(runs, key=lambda r: int(r.data.tags["recsys.trial"]))


def test_trials_are_relogged_once_per_store_and_found_again_after_switching_back(tmp_path):
    import mlflow

    from recsys.mlops import adopt_trials, find_trial_run, restore_trial_run
    from recsys.search import SearchConfig, run_search, search_key
    from tests.unit.search.test_search import SPACE_EXPLICIT, fake_rmse

    mlflow.MlflowClient(f"sqlite:///{tmp_path}/a.db").search_experiments()  # creates the tables
    shutil.copyfile(tmp_path / "a.db", tmp_path / "b.db")  # a second empty store, without ~2 s again
    stores = {}
    for name in ("a", "b"):
        client = mlflow.MlflowClient(f"sqlite:///{tmp_path / name}.db")
        stores[name] = client, client.create_experiment("s", artifact_location=str(tmp_path / name))
    state_file = str(tmp_path / "state.json")
    fits = []

    def search(store, max_evals):
        client, exp_id = stores[store]
        parent_id = client.create_run(exp_id).info.run_id
        config = SearchConfig(max_evals=max_evals, max_iter=2, seed=3)

        def evaluate_trial(index, als):
            fits.append(index)
            run_id = client.create_run(exp_id, tags={"mlflow.parentRunId": parent_id}).info.run_id
            if index == 1:  # a failed trial that has a run: restored as FAILED
                return {"metrics": {"rmse": float("nan")}, "run_id": run_id}
            client.log_metric(run_id, "val_rmse", fake_rmse(als))
            return {"metrics": {"rmse": fake_rmse(als)}, "run_id": run_id}

        def restore_trial(index, rec):
            return find_trial_run(client, rec, exp_id) or restore_trial_run(
                client, exp_id, parent_id, rec, run_name=f"trial {index}", tags={"recsys.trial": str(index)},
                params=rec["params"])

        records = run_search(None, config, SPACE_EXPLICIT, evaluate_trial, state_file=state_file,
                             key=search_key(config, SPACE_EXPLICIT, {}), restore_trial=restore_trial)
        adopt_trials(client, records, parent_id)
        children = client.search_runs([exp_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")
        return records, {r.info.run_id: r for r in children}

    in_a, _ = search("a", 3)
    in_b, children = search("b", 3)
    assert fits == [0, 1, 2]  # restoring fits nothing
    assert set(children) == {r["run_id"] for r in in_b} and len(children) == 3
    assert [r["other_run_ids"] for r in in_b] == [[r["run_id"]] for r in in_a]
    assert [children[r["run_id"]].info.status for r in in_b] == ["FINISHED", "FAILED", "FINISHED"]
    assert children[in_b[1]["run_id"]].data.tags["recsys.error"].startswith("ValueError: objective rmse")
    assert children[in_b[2]["run_id"]].data.metrics["val_rmse"] == in_a[2]["metrics"]["rmse"]
    assert children[in_b[0]["run_id"]].data.tags["recsys.restored_from_run_id"] == in_a[0]["run_id"]

    again, children = search("b", 4)  # the same store: nothing re-logged, one trial more
    assert fits == [0, 1, 2, 3] and again[:3] == in_b and len(children) == 4

    back, children = search("a", 4)  # the first store still has trials 0-2: only 3 is re-logged
    assert fits == [0, 1, 2, 3]
    assert [r["run_id"] for r in back[:3]] == [r["run_id"] for r in in_a]
    assert [r["other_run_ids"] for r in back[:3]] == [[b["run_id"]] for b in in_b]
    assert children[back[3]["run_id"]].data.tags["recsys.restored_from_run_id"] == again[3]["run_id"]
    assert [r["vals"] for r in back] == [r["vals"] for r in again] and len(children) == 4


@pytest.mark.slow
def test_search_resumed_on_another_store_relogs_its_trials_and_refits_only_the_best(
        spark, tmp_path, monkeypatch):
    from recsys import jobs
    from tests.support.tiny_movielens import write_tiny_movielens

    monkeypatch.chdir(tmp_path)
    data = write_tiny_movielens(tmp_path / "tiny", n_users=60, per_user=24)
    split_dir = str(tmp_path / "split")
    space = tmp_path / "space.yaml"
    space.write_text(TINY_SPACE)

    def search(max_evals):
        return jobs.als_search(data=data, split_dir=split_dir, max_evals=max_evals, max_iter=3, seed=11,
                               space=str(space), spark_conf=())

    def state():
        [path] = Path(split_dir).glob("_searches/*/state.json")
        return path.read_text()

    first, first_exp = _use_store(monkeypatch, tmp_path, "a")
    summary_a = search(2)
    in_a = json.loads(state())["trials"]
    assert len(in_a) == 2 and len(_trials(first, first_exp, summary_a["run_id"])) == 2

    # another store, one trial more: the two finished trials are re-logged from the state, one is
    # fitted, and only a restored best trial is refitted (its model is needed for the test split)
    second, second_exp = _use_store(monkeypatch, tmp_path, "b")
    summary_b = search(3)
    trials = _trials(second, second_exp, summary_b["run_id"])
    records = json.loads(state())["trials"]
    assert [t.data.tags["recsys.trial"] for t in trials] == ["0", "1", "2"]  # none lost, none repeated
    assert [t.info.run_id for t in trials] == [r["run_id"] for r in records]
    assert [r["vals"] for r in records[:2]] == [r["vals"] for r in in_a]  # not searched again
    assert len({json.dumps(r["vals"], sort_keys=True) for r in records}) == 3
    assert [r.get("other_run_ids") for r in records] == [[in_a[0]["run_id"]], [in_a[1]["run_id"]], None]
    for trial, old in zip(trials, in_a, strict=False):
        assert trial.info.status == "FINISHED"
        assert trial.data.tags["recsys.restored_from_run_id"] == old["run_id"]
        assert trial.data.params["rank"] == str(old["params"]["rank"])
        assert trial.data.metrics["val_rmse"] == pytest.approx(old["metrics"]["rmse"], rel=1e-12)
    assert "recsys.restored_from_run_id" not in trials[2].data.tags
    best = trials[[r["run_id"] for r in records].index(summary_b["best_run_id"])]
    refitted = [t.info.run_id for t in trials if "recsys.model_refit" in t.data.tags]
    # with seed 11 the best is trial 0 (val rmse 0.5633 against 0.6906 and 0.5642), a restored one
    assert "recsys.restored_from_run_id" in best.data.tags, "pick a seed whose best trial is restored"
    assert refitted == [best.info.run_id]
    # same config, same ALS seed, same split: the refitted model is the first store's
    assert summary_b["best_params"] == summary_a["best_params"]
    assert summary_b["test"]["rmse"] == pytest.approx(summary_a["test"]["rmse"], rel=1e-6)
