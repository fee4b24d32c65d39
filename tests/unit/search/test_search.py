"""The search library: space validation, the one objective, and resume after an interruption.

These drive ``run_search`` with a cheap deterministic stand-in for a trial (no Spark), so the
resume logic is checked on its own; tests/test_e2e_als.py runs real ALS trials.
"""

from __future__ import annotations

import json
import math

import pytest

from recsys.core import RecsysError
from recsys.search import (
    Objective,
    SearchConfig,
    best_trial,
    load_space,
    run_search,
    search_key,
    trial_config,
    trials_table,
)

SPACE_EXPLICIT = {"rank": {"dist": "qloguniform", "low": 2.0, "high": 32.0, "q": 1.0},
                  "reg_param": {"dist": "loguniform", "low": 0.01, "high": 1.0}}


def fake_rmse(als):
    """A smooth bowl with its minimum at rank 8, reg_param 0.1."""
    return 0.8 + 0.05 * (math.log(als.rank / 8)) ** 2 + 0.05 * (math.log(als.reg_param / 0.1)) ** 2


def make_eval(calls, fail_at=None):
    def evaluate_trial(index, als):
        calls.append((index, als.rank, als.reg_param))
        if fail_at is not None and index == fail_at:
            raise RuntimeError(f"injected failure in trial {index}")
        return {"metrics": {"rmse": fake_rmse(als), "precision_at_k": 0.1}, "run_id": f"run{index}"}

    return evaluate_trial


def test_objective_direction_drives_loss_and_best():
    rmse, prec = Objective.for_search("rmse", "explicit"), Objective.for_search("auto", "implicit")
    assert (rmse.metric, rmse.direction) == ("rmse", "min")
    assert (prec.metric, prec.direction) == ("precision_at_k", "max")
    assert rmse.loss({"rmse": 0.9}) == 0.9 and prec.loss({"precision_at_k": 0.2}) == -0.2
    recs = [{"status": "ok", "metrics": {"rmse": 0.9, "precision_at_k": 0.3}},
            {"status": "failed", "metrics": {}},
            {"status": "ok", "metrics": {"rmse": 0.85, "precision_at_k": 0.1}}]
    assert best_trial(recs, rmse) is recs[2]
    assert best_trial(recs, prec) is recs[0]
    with pytest.raises(ValueError):
        rmse.loss({"rmse": float("nan")})


@pytest.mark.parametrize("kwargs, message", [
    ({"feedback": "both"}, "feedback='both' is unknown"),
    ({"objective": "auc"}, "objective='auc' is unknown"),
    ({"feedback": "implicit", "objective": "rmse"}, "objective=rmse needs feedback=explicit"),
    ({"max_evals": 0}, "max_evals=0 must be an integer >= 1"),
    ({"on_error": "retry"}, "on_error='retry' is unknown"),
    ({"k": 0}, "k=0 must be an integer >= 1"),
])
def test_search_config_errors(kwargs, message):
    with pytest.raises(RecsysError, match=message):
        SearchConfig(**kwargs)


def test_space_yaml_is_validated(tmp_path):
    good = load_space("default", "implicit")
    assert set(good) == {"rank", "reg_param", "alpha"}
    assert good["rank"]["dist"] == "qloguniform"
    assert set(load_space("default", "explicit")) == {"rank", "reg_param"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("explicit:\n  reg_param: {dist: loguniform, low: 0, high: 1}\n")
    with pytest.raises(RecsysError, match="explicit.reg_param: loguniform needs low > 0"):
        load_space(str(bad), "explicit")
    bad.write_text("explicit:\n  ranks: {dist: uniform, low: 1, high: 2}\n")
    with pytest.raises(RecsysError, match="explicit.ranks: not a searchable ALS parameter"):
        load_space(str(bad), "explicit")
    with pytest.raises(RecsysError, match="file not found"):
        load_space(str(tmp_path / "missing.yaml"), "explicit")
    # bounds a trial would be refused for are refused before any trial runs
    bad.write_text("explicit:\n  reg_param: {dist: uniform, low: -0.5, high: 1}\n")
    with pytest.raises(RecsysError, match=r"explicit.reg_param: low=-0.5 is out of range: "
                                          r"reg_param=-0.5 must be a finite number >= 0"):
        load_space(str(bad), "explicit")
    # quniform draws round(x / q) * q: low 1 with q 2 can draw rank 0
    bad.write_text("explicit:\n  rank: {dist: quniform, low: 1, high: 8, q: 2}\n")
    with pytest.raises(RecsysError, match=r"explicit.rank: low=1 is out of range: rank=0 must be"):
        load_space(str(bad), "explicit")
    bad.write_text("explicit:\n  rank: {dist: quniform, low: 1.5, high: 8, q: 1}\n")
    assert load_space(str(bad), "explicit")["rank"]["low"] == 1.5


def test_trial_config_rounds_rank_and_fixes_the_rest():
    als = trial_config({"rank": 7.0, "reg_param": 0.05, "alpha": 3.0},
                       SearchConfig(feedback="implicit", max_iter=3, seed=5))
    assert (als.rank, als.reg_param, als.alpha, als.max_iter, als.implicit_prefs, als.seed) == \
        (7, 0.05, 3.0, 3, True, 5)


def _search(tmp_path, max_evals, calls, fail_at=None, on_error="continue", name="s"):
    config = SearchConfig(max_evals=max_evals, max_iter=2, seed=3, on_error=on_error)
    key = search_key(config, SPACE_EXPLICIT, {"train": "x"})
    state = str(tmp_path / name / "state.json")
    return run_search(None, config, SPACE_EXPLICIT, make_eval(calls, fail_at), state_file=state,
                      key=key), state


def test_failed_trial_continues_and_is_recorded(tmp_path):
    calls = []
    records, _ = _search(tmp_path, 3, calls, fail_at=1)
    assert [r["status"] for r in records] == ["ok", "failed", "ok"]
    assert "injected failure in trial 1" in records[1]["error"]
    assert records[1]["loss"] is None
    table = trials_table(records)
    assert list(table["status"]) == ["ok", "failed", "ok"]
    assert table.loc[0, "val_rmse"] == pytest.approx(records[0]["metrics"]["rmse"])


def test_resume_after_abort_repeats_nothing_and_finds_the_same_best(tmp_path):
    # uninterrupted reference
    ref_calls = []
    reference, _ = _search(tmp_path, 6, ref_calls, name="ref")
    objective = SearchConfig().objective_spec

    # interrupted: trial 2 aborts the search after two finished trials
    calls = []
    with pytest.raises(RuntimeError, match="injected failure in trial 2"):
        _search(tmp_path, 6, calls, fail_at=2, on_error="abort", name="cut")
    state = json.loads((tmp_path / "cut" / "state.json").read_text())
    assert len(state["trials"]) == 2  # the aborted trial is not recorded: a rerun retries it

    calls_after = []
    resumed, _ = _search(tmp_path, 6, calls_after, name="cut")
    assert [c[0] for c in calls_after] == [2, 3, 4, 5]  # finished trials are not rerun
    assert [r["vals"] for r in resumed] == [r["vals"] for r in reference]
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in reference])
    assert best_trial(resumed, objective)["vals"] == best_trial(reference, objective)["vals"]
    assert len({(r["vals"]["rank"], r["vals"]["reg_param"]) for r in resumed}) == 6

    # a rerun of the finished search does nothing; a larger max_evals extends it
    again = []
    assert _search(tmp_path, 6, again, name="cut")[0] == resumed and again == []
    more = []
    extended, _ = _search(tmp_path, 7, more, name="cut")
    assert [c[0] for c in more] == [6] and extended[:6] == resumed


def test_state_of_another_search_is_refused(tmp_path):
    calls = []
    _, state = _search(tmp_path, 1, calls)
    config = SearchConfig(max_evals=2, max_iter=3, seed=3)
    other_key = search_key(config, SPACE_EXPLICIT, {"train": "x"})
    with pytest.raises(RecsysError, match="belongs to another search"):
        run_search(None, config, SPACE_EXPLICIT, make_eval(calls), state_file=state, key=other_key)


def test_default_backend_keeps_the_search_key_of_existing_states():
    space = {"rank": {"dist": "qloguniform", "low": 2.0, "high": 32.0, "q": 1.0}}
    hyperopt = SearchConfig(max_evals=3, max_iter=2, seed=3)
    # the key this search had before `backend` existed: its state.json must still be found
    assert search_key(hyperopt, space, {"a": "b"}) == "3c7e355cf11ccf6b"
    optuna = SearchConfig(max_evals=3, max_iter=2, seed=3, backend="optuna")
    assert search_key(optuna, space, {"a": "b"}) != search_key(hyperopt, space, {"a": "b"})
    with pytest.raises(RecsysError, match="backend='skopt' is unknown; allowed: hyperopt, optuna"):
        SearchConfig(backend="skopt")


def test_optuna_space_respects_q_as_hyperopt_does():
    from optuna.distributions import FloatDistribution, IntDistribution

    from recsys.search import optuna_space

    dists = optuna_space({"rank": {"dist": "qloguniform", "low": 4.0, "high": 64.0, "q": 1.0},
                          "alpha": {"dist": "quniform", "low": 0.3, "high": 4.1, "q": 0.5},
                          "reg_param": {"dist": "qloguniform", "low": 0.01, "high": 1.0, "q": 0.01}})
    assert dists["rank"] == (IntDistribution(4, 64, log=True), None)
    assert dists["alpha"] == (FloatDistribution(0.5, 4.0, step=0.5), None)  # round(x / q) * q's range
    assert dists["reg_param"] == (FloatDistribution(0.01, 1.0, log=True), 0.01)  # rounded after the draw


def _optuna_search(tmp_path, max_evals, calls, fail_at=None, on_error="continue", name="s"):
    space = {**SPACE_EXPLICIT, "reg_param": {"dist": "qloguniform", "low": 0.01, "high": 1.0, "q": 0.005}}
    config = SearchConfig(max_evals=max_evals, max_iter=2, seed=3, on_error=on_error, backend="optuna")
    state = str(tmp_path / name / "state.json")
    return run_search(None, config, space, make_eval(calls, fail_at), state_file=state,
                      key=search_key(config, space, {"train": "x"}))


def test_optuna_backend_resumes_with_the_proposals_of_an_uninterrupted_search(tmp_path):
    reference = _optuna_search(tmp_path, 8, [], name="ref")
    assert all(r["status"] == "ok" for r in reference)
    ranks = [r["params"]["rank"] for r in reference]
    assert all(isinstance(rank, int) and 2 <= rank <= 32 for rank in ranks)
    for rec in reference:  # the draw is kept; the trial got it rounded to q = 0.005
        assert rec["params"]["reg_param"] == pytest.approx(round(rec["vals"]["reg_param"] / 0.005) * 0.005)

    with pytest.raises(RuntimeError, match="injected failure in trial 3"):
        _optuna_search(tmp_path, 8, [], fail_at=3, on_error="abort", name="cut")
    calls = []
    resumed = _optuna_search(tmp_path, 6, calls, name="cut")
    assert [c[0] for c in calls] == [3, 4, 5]  # the 3 finished trials are not rerun
    calls = []
    extended = _optuna_search(tmp_path, 8, calls, name="cut")
    assert [c[0] for c in calls] == [6, 7] and extended[:6] == resumed
    assert [r["vals"] for r in extended] == [r["vals"] for r in reference]
    assert [r["loss"] for r in extended] == pytest.approx([r["loss"] for r in reference])
    assert len({tuple(sorted(r["vals"].items())) for r in extended}) == 8
    # TPE models the results after the random start-up trials: the best is near the bowl's bottom
    best = best_trial(extended, SearchConfig().objective_spec)
    assert fake_rmse(trial_config(best["vals"], SearchConfig())) < 0.9


def test_optuna_backend_learns_from_a_failed_trial_without_crashing(tmp_path):
    records = _optuna_search(tmp_path, 7, [], fail_at=2)
    assert [r["status"] for r in records].count("failed") == 1 and records[2]["loss"] is None
    assert len(records) == 7
