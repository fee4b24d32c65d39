"""`main` entry point: every stage in order, each a nested run under one parent run.

The parent run tells the story at a glance in the MLflow UI (runs table, chart view, run page):
its own metrics are the headline figures (:func:`headline_metrics`), its description
(``mlflow.note.content``) says what was promoted and why (:func:`describe_pipeline`), and
``champions_vs_baselines.png`` draws the champions beside their baselines.
"""

from __future__ import annotations

import time

from recsys.core import fs
from recsys.core.constants import DEFAULT_K, NOTE_TAG, PRECISION, RMSE
from recsys.entry_points import BUNDLED, declared
from recsys.jobs.als_search import als_search
from recsys.jobs.baseline import baseline
from recsys.jobs.promote import promote
from recsys.jobs.recommend import recommend
from recsys.jobs.split import split
from recsys.jobs.twins import twins
from recsys.mlops.tracking import (
    finite_metrics,
    log_new_params,
    say,
    share_runs_view,
    stage_run,
    temp_artifact_dir,
)

#: Each model role: its search's feedback, objective, and the baseline it must beat.
ROLES = {"ranking": ("implicit", PRECISION, "popularity"), "rating": ("explicit", RMSE, "bias")}
#: Prefix of the stage timings on the parent run. MLflow's chart view groups metrics named
#: ``<prefix>/<name>`` in a section per prefix, sections in the order of their names, before its
#: "Model metrics": the headline metrics are ``ranking/``, ``rating/`` and ``twins/`` (each
#: section a champion and its baseline side by side), the timings come after them.
SECONDS_PREFIX = "wall_seconds/"
#: The runs-table view ``main`` shares (MLflow's "share view": an experiment tag the UI reads
#: from the link's ``viewStateShareKey``): the headline metrics as columns.
SHARED_VIEW = "recsys-headline"
FIGURE = "champions_vs_baselines.png"


@declared("main")
def pipeline(data, split_dir, ranking_evals, rating_evals, max_iter, spark_master, spark_conf):
    """`main` entry point: every stage in order, each a nested run under one parent run.

    split -> baseline -> ranking search (implicit, ``precision_at_k``) + promote to
    ``recsys-als`` -> rating search (explicit, RMSE) + promote to ``recsys-als-ratings`` ->
    ``recommend`` (top-K lists for every user from the recommender just judged) -> twins.
    ``ranking_evals`` / ``rating_evals``: trials of each search; ``max_iter``: ALS sweeps per trial.

    The parent run logs :func:`headline_metrics` as each stage ends, ``wall_seconds/<stage>`` for
    every stage, its description (:func:`describe_pipeline`) and ``champions_vs_baselines.png``;
    the last line it prints is the MLflow UI link that opens the runs table with the headline
    metrics as columns (:func:`recsys.mlops.tracking.share_runs_view`).
    Returns ``{stage: result}``.
    """
    import mlflow

    spark = {"spark_master": spark_master, "spark_conf": spark_conf}
    where = {"data": data, "split_dir": split_dir}
    out = {}

    def timed(stage, job, **kwargs):
        start = time.time()
        out[stage] = job(**kwargs)
        mlflow.log_metric(f"{SECONDS_PREFIX}{stage}", time.time() - start)
        mlflow.log_metrics(headline_metrics(out))  # as soon as known: a failed later stage keeps them
        return out[stage]

    with stage_run("main"):
        log_new_params({"data": data or BUNDLED, "split_dir": split_dir, "ranking_evals": ranking_evals,
                        "rating_evals": rating_evals, "max_iter": max_iter})
        timed("split", split, **where, **spark)
        timed("baseline", baseline, **where, **spark)
        for role, evals in (("ranking", ranking_evals), ("rating", rating_evals)):
            search = timed(f"{role}_search", als_search, **where, feedback=ROLES[role][0], max_evals=evals,
                           max_iter=max_iter, **spark)
            timed(f"{role}_promote", promote, run_id=search["run_id"])
        ranking = out["ranking_promote"]
        # the champion serves; when this candidate did not become it and there is none, its own
        # version does (the lists are still the best this run found), and the log says so
        model_uri = f"models:/{ranking['model_name']}@champion"
        if ranking["decision"] == "kept" and ranking["champion_version"] is None:
            model_uri = f"models:/{ranking['model_name']}/{ranking['version']}"
            say(f"[main] {ranking['model_name']} has no champion ({ranking['reason']}); "
                f"recommending with {model_uri}")
        # beside the split (same file system: on a cluster, HDFS or a bucket, never the driver's
        # disk), one folder per model version: a later `main` whose champion changed does not
        # meet another model's lists there (`recommend` refuses to overwrite them)
        version = f"{ranking['model_name']}-v{ranking['version']}"
        output = fs.join(fs.parent(split_dir), "recommendations", version)
        timed("recommend", recommend, model_uri=model_uri, output=output, split_dir=split_dir, data=data,
              **spark)
        timed("twins", twins, data=data, **spark)
        _log_story(out, data)
    return out


def _champion_score(decision: dict):
    """The test score of the model's champion after ``decision`` (a promote result): the
    candidate's when it is (or already was) the champion, the standing champion's when the
    candidate was kept; None when the model has no champion."""
    if decision["decision"] in ("promoted", "already_champion"):
        return decision["candidate_score"]
    return decision["champion_score"] if decision["champion_version"] is not None else None


def headline_metrics(out: dict) -> dict:
    """The figures a reader wants first, from the stage results ``out`` (``{stage: result}`` as
    :func:`pipeline` builds it; stages not yet run are left out): the ranking champion's and
    popularity's test ``precision_at_k`` (``ranking/champion_test_precision_at_k``,
    ``ranking/popularity_test_precision_at_k``), the rating champion's and the bias baseline's
    test RMSE (``rating/champion_test_rmse``, ``rating/bias_test_rmse``), and the twins' and
    random pairs' mean Pearson (``twins/twins_pearson_mean``, ``twins/random_pearson_mean``).
    Baselines are the ones the promotion gate compared with (the search's, on the test split)."""
    metrics = {}
    for role, (_feedback, metric, base) in ROLES.items():
        search, decision = out.get(f"{role}_search"), out.get(f"{role}_promote")
        if search:
            metrics[f"{role}/{base}_test_{metric}"] = search["baselines"].get(f"baseline_test_{metric}")
        if decision:
            metrics[f"{role}/champion_test_{metric}"] = _champion_score(decision)
    if out.get("twins"):
        for group in ("twins", "random"):
            metrics[f"twins/{group}_pearson_mean"] = out["twins"].get(f"{group}_pearson_mean")
    return finite_metrics(metrics)


def describe_pipeline(out: dict, data=None) -> str:
    """The ``main`` run's description: a few markdown lines saying what each promotion decided
    and why, the scores against the baselines, the twins' validation and where the lists are."""
    metrics = headline_metrics(out)
    lines = [f"**recsys main** on `{data or BUNDLED}`: what was promoted, and why.", ""]
    for role, (_feedback, metric, base) in ROLES.items():
        decision = out.get(f"{role}_promote")
        if not decision:
            continue
        name, version = decision["model_name"], decision["version"]
        shown = f"precision@{DEFAULT_K}" if metric == PRECISION else "RMSE"
        score, baseline = decision["candidate_score"], metrics.get(f"{role}/{base}_test_{metric}")
        against = (f"test {shown} **{score:.4f}** against the {base} baseline's {baseline:.4f}"
                   if baseline is not None else f"test {shown} **{score:.4f}** (no baseline)")
        if decision["decision"] == "promoted":
            what = f"**{name} v{version} is `@champion`**"
        elif decision["decision"] == "already_champion":
            what = f"**{name} v{version} stays `@champion`**"
        else:
            champion = decision["champion_version"]
            what = (f"**{name} v{version} not promoted** (`@challenger`; "
                    + (f"v{champion} stays `@champion`)" if champion is not None else "no champion)"))
        lines.append(f"- {what} ({role}): {against}. Why: {decision['reason']}.")
    twins_result = out.get("twins") or {}
    if "twins/twins_pearson_mean" in metrics and "twins/random_pearson_mean" in metrics:
        p_value = twins_result.get("pearson_p_value")
        # the numbers and the p-value, no verdict: on ml-latest-small the difference is not significant
        lines.append(f"- **Twins**: the top {int(twins_result.get('twins_pearson_count', 0))} pairs by "
                     f"Jaccard have mean Pearson **{metrics['twins/twins_pearson_mean']:.3f}** "
                     f"against {metrics['twins/random_pearson_mean']:.3f} for random pairs"
                     + (f" (p = {p_value:.2g})." if p_value is not None else "."))
    recommended = out.get("recommend")
    if recommended:
        counts = recommended.get("counts", {})
        lines.append(f"- **Lists**: {int(counts.get('rows', 0)):,} rows for {int(counts.get('users', 0)):,} "
                     f"users from `{recommended.get('model_uri')}`.")
    lines += ["", f"Figure: `{FIGURE}`; each stage is a nested run (expand this row), "
              "each search's trials nested under it."]
    return "\n".join(lines)


def _log_story(out: dict, data) -> None:
    """The parent run's description and figure (see the module docstring)."""
    import os

    import mlflow

    from recsys.mlops import plots

    mlflow.set_tag(NOTE_TAG, describe_pipeline(out, data))
    metrics = headline_metrics(out)
    panels = []
    for role, (_feedback, metric, base) in ROLES.items():
        shown = f"precision@{DEFAULT_K}" if metric == PRECISION else "RMSE"
        panels.append({"title": f"{role}: test {shown}", "better": "lower" if metric == RMSE else "higher",
                       "bars": {"champion": metrics.get(f"{role}/champion_test_{metric}"),
                                base: metrics.get(f"{role}/{base}_test_{metric}")}})
    panels.append({"title": "twins: mean Pearson", "better": "higher",
                   "bars": {"twins": metrics.get("twins/twins_pearson_mean"),
                            "random pairs": metrics.get("twins/random_pearson_mean")}})
    with temp_artifact_dir() as tmp:
        path = plots.champions_vs_baselines(panels, os.path.join(tmp, FIGURE))
        mlflow.log_artifact(path)
    run = mlflow.active_run()
    link = share_runs_view(mlflow.MlflowClient(), run.info.experiment_id, SHARED_VIEW, sorted(metrics))
    uri = mlflow.get_tracking_uri()
    first = "" if uri.startswith(("http://", "https://")) else f"`mlflow ui --backend-store-uri {uri}`, then "
    say(f"[main] done. To see it: {first}{link}")
