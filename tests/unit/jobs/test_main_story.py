"""What the `main` run shows first in the MLflow UI, from the stage results `pipeline` collects:
its headline metrics (champion against baseline, per role; twins against random pairs) and its
description. The stage results here have the shape the jobs return; the `main` run itself is
checked against them in tests/e2e/test_main_pipeline.py."""

from __future__ import annotations

from recsys.jobs import describe_pipeline, headline_metrics


def _search(metric, baseline):
    return {"run_id": f"search-{metric}", "objective": metric,
            "baselines": {f"baseline_test_{metric}": baseline, f"baseline_val_{metric}": 0.5}}


def _decision(name, metric, decision, score, baseline, champion=None, champion_score=None, version=1):
    reason = {"promoted": f"no champion yet; test {metric} {score:.5f} beats the baseline's {baseline:.5f}",
              "kept": f"test {metric} {score:.5f} does not beat champion v{champion}'s {champion_score}"}
    return {"model_name": name, "objective": metric, "decision": decision, "version": version,
            "candidate_score": score, "baseline_score": baseline, "champion_version": champion,
            "champion_score": champion_score, "reason": reason.get(decision, "version 1 is the champion")}


TWINS = {"twins_pearson_mean": 0.41, "random_pearson_mean": 0.12, "twins_pearson_count": 100.0,
         "pearson_p_value": 1.5e-9, "users_kept": 600.0}


def test_a_fresh_main_shows_each_champion_beside_its_baseline():
    out = {"split": {}, "baseline": {"val_precision_at_k": 0.06},
           "ranking_search": _search("precision_at_k", 0.0645),
           "ranking_promote": _decision("recsys-als", "precision_at_k", "promoted", 0.1046, 0.0645),
           "rating_search": _search("rmse", 0.8801),
           "rating_promote": _decision("recsys-als-ratings", "rmse", "promoted", 0.8712, 0.8801),
           "recommend": {"model_uri": "models:/recsys-als@champion", "counts": {"rows": 6100, "users": 610}},
           "twins": TWINS}
    assert headline_metrics(out) == {
        "ranking/champion_test_precision_at_k": 0.1046, "ranking/popularity_test_precision_at_k": 0.0645,
        "rating/champion_test_rmse": 0.8712, "rating/bias_test_rmse": 0.8801,
        "twins/twins_pearson_mean": 0.41, "twins/random_pearson_mean": 0.12}
    note = describe_pipeline(out, data=None)
    lines = note.splitlines()
    assert lines[0] == "**recsys main** on `bundled`: what was promoted, and why."
    assert ("- **recsys-als v1 is `@champion`** (ranking): test precision@10 **0.1046** against the "
            "popularity baseline's 0.0645. Why: no champion yet; test precision_at_k 0.10460 beats the "
            "baseline's 0.06450.") in lines
    assert ("- **recsys-als-ratings v1 is `@champion`** (rating): test RMSE **0.8712** against the bias "
            "baseline's 0.8801. Why: no champion yet; test rmse 0.87120 beats the baseline's "
            "0.88010.") in lines
    assert ("- **Twins**: the top 100 pairs by Jaccard have mean Pearson **0.410** against 0.120 for "
            "random pairs (p = 1.5e-09).") in lines
    assert "- **Lists**: 6,100 rows for 610 users from `models:/recsys-als@champion`." in lines


def test_a_candidate_that_was_kept_leaves_the_standing_champions_score_or_none():
    out = {"ranking_search": _search("precision_at_k", 0.0645),
           "ranking_promote": _decision("recsys-als", "precision_at_k", "kept", 0.0990, 0.0645, champion=1,
                                        champion_score=0.1046, version=2),
           "rating_search": _search("rmse", 0.8801),
           "rating_promote": _decision("recsys-als-ratings", "rmse", "kept", 0.90, 0.8801)}
    out["rating_promote"]["reason"] = "test rmse 0.90000 does not beat the baseline's 0.88010"
    # the ranking champion is still v1 (its score, not the candidate's); the rating role has none
    assert headline_metrics(out) == {"ranking/champion_test_precision_at_k": 0.1046,
                                     "ranking/popularity_test_precision_at_k": 0.0645,
                                     "rating/bias_test_rmse": 0.8801}
    note = describe_pipeline(out, data="hdfs:///ml-latest.zip")
    assert "**recsys-als v2 not promoted** (`@challenger`; v1 stays `@champion`) (ranking)" in note
    assert ("**recsys-als-ratings v1 not promoted** (`@challenger`; no champion) (rating): test RMSE "
            "**0.9000** against the bias baseline's 0.8801. Why: test rmse 0.90000 does not beat the "
            "baseline's 0.88010.") in note
    assert note.startswith("**recsys main** on `hdfs:///ml-latest.zip`") and "Twins" not in note


def test_stages_not_run_yet_add_nothing():
    assert headline_metrics({"split": {}, "baseline": {"val_precision_at_k": 0.06}}) == {}
    only_search = {"ranking_search": _search("precision_at_k", 0.0645)}
    assert headline_metrics(only_search) == {"ranking/popularity_test_precision_at_k": 0.0645}
