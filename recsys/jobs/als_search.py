"""`als_search` entry point: TPE over ALS hyper-parameters, one nested run per trial."""

from __future__ import annotations

import time

from recsys.core import fs
from recsys.core.constants import (
    ALS_MODEL_ARTIFACT,
    TAG_BEST_RUN,
    TAG_FEEDBACK,
    TAG_OBJECTIVE,
    TAG_RECOMMENDER_URI,
    TAG_SEARCH_KEY,
    TAG_SPLIT,
)
from recsys.data.split import split_digest
from recsys.entry_points import BUNDLED, declared
from recsys.jobs.common import (
    cached_split,
    data_source,
    judge_baselines,
)
from recsys.mlops.tracking import (
    adopt_trials,
    finite_metrics,
    kill_stale_runs,
    loaded_spark_model,
    log_json,
    log_new_params,
    log_recommender_model,
    name_run,
    say,
    spark_session,
    stage_run,
    temp_artifact_dir,
    trial_metrics,
)
from recsys.mlops.trials import TrialRuns, log_search_table


@declared("als_search")
def als_search(data, split_dir, feedback, objective, max_evals, max_iter, k, relevance_threshold, seed,
               on_error, backend, space, spark_master, spark_conf):
    """`als_search` entry point: TPE (``backend`` hyperopt or optuna) over ALS hyper-parameters
    (see recsys.search).

    One parent run; one nested child run per trial (named by its searched values) with the
    trial's params, ``val_*`` metrics (without ``SPLIT_ONLY_METRICS``, the counts every trial
    shares: the parent has them), ``fit_seconds``/``eval_seconds`` and its ``model``. The
    split is read, cached and its bias fallback fitted once; each trial unpersists what it
    cached. Rerun with the same parameters to resume an interrupted search, in this tracking
    store or another: trials whose runs this store lacks are re-logged from the search state
    (:func:`recsys.mlops.tracking.restore_trial_run`), and a restored best trial is refitted once to
    log its model (tag ``recsys.model_refit``).

    Parent logs: params (the ``SearchConfig``, ``space``, ``data``, ``split_dir``,
    ``search_key``, ``best_<param>``); tags ``recsys.feedback``, ``recsys.objective``,
    ``recsys.best_run_id``, ``recsys.split_digest``; metrics ``val_*`` and ``test_*`` of the best
    trial (test, but the shared counts, also on the best child run),
    ``baseline_val_*``/``baseline_test_*`` (popularity by count; ``rmse`` is the bias baseline's),
    ``trials_ok``, ``trials_failed``, ``search_seconds``, ``log_recommender_seconds``; artifacts
    ``trials.csv``, ``best.json``, ``search_space.yaml``, ``plots/search_landscape.png``,
    ``plots/objective_per_trial.png``. The best trial's run also gets ``recommender``, the served
    top-K model of :func:`log_recommender_model`, its URI in the tag ``recsys.recommender_uri``
    (what ``promote`` registers). Returns a summary dict.
    """
    import mlflow

    from recsys.evaluation.protocol import HeldOut
    from recsys.search.run import (
        SearchConfig,
        best_trial,
        load_space,
        resolve_space_path,
        run_search,
        search_key,
        state_path,
        trials_table,
    )

    with stage_run("als_search") as parent:
        started = time.time()
        config = SearchConfig(feedback=feedback, objective=objective, max_evals=max_evals,
                              max_iter=max_iter, k=k, relevance_threshold=relevance_threshold,
                              seed=seed, on_error=on_error, backend=backend)
        objective_spec = config.objective_spec
        name_run(f"als_search {config.feedback} {config.metric} {config.max_evals} trials"
                 + (f" {config.backend}" if config.backend != "hyperopt" else ""))
        search_space = load_space(space, config.feedback)
        spark = spark_session(spark_master, spark_conf)
        loaded, train, validation, fallback = cached_split(spark, data, split_dir)
        key = search_key(config, search_space, loaded.manifest.get("digests", {}))
        digest = split_digest(loaded.manifest)
        parent_id = parent.info.run_id
        log_new_params({**config.as_params(), "space": space, "data": data or BUNDLED,
                        "split_dir": split_dir, "search_key": key})
        mlflow.set_tags({TAG_FEEDBACK: config.feedback, TAG_OBJECTIVE: config.metric,
                         TAG_SEARCH_KEY: key, TAG_SPLIT: digest})
        with open(resolve_space_path(space), encoding="utf-8") as fh:  # the same name whichever file
            mlflow.log_text(fh.read(), "search_space.yaml")
        client = mlflow.MlflowClient()
        kill_stale_runs(client, parent.info.experiment_id, key, parent_id)
        say(f"[als_search] {config.feedback} ALS, objective {config.metric} "
            f"({objective_spec.direction}imise), {config.max_evals} trials, key {key}")

        baselines, popularity = judge_baselines(train, validation, loaded.test, fallback, config.k,
                                                 config.relevance_threshold)
        mlflow.log_metrics(baselines)
        if config.feedback == "explicit":  # every trial fits on these residuals: cache them once,
            fallback.cached_residuals(train)  # before the trials (whose own caches are released)

        # what every trial's evaluation shares, cached before the trials (which release their own)
        held = HeldOut(train, validation, k=config.k, relevance_threshold=config.relevance_threshold,
                       fallback=fallback).prepare(ratings=config.feedback == "explicit")
        trials = TrialRuns(spark, client, parent, config, search_space, key, digest, held)
        records = run_search(spark, config, search_space, trials.evaluate,
                             state_file=state_path(split_dir, key), key=key, progress=say,
                             restore_trial=trials.restore)
        adopt_trials(client, records, parent_id)
        table = trials_table(records)
        best = best_trial(records, objective_spec)
        ok = log_search_table(table, config, baselines, records, started)
        if best is None:
            from recsys.core.errors import RecsysError

            raise RecsysError(f"all {len(records)} trials failed; first error: {records[0]['error']}")

        mlflow.set_tag(TAG_BEST_RUN, best["run_id"])
        mlflow.log_params({f"best_{name}": value for name, value in best["params"].items()})
        mlflow.log_metrics(finite_metrics(best["metrics"], "val_"))
        trials.ensure_model(best)  # test numbers, once, for the one model that is a candidate
        held.release()
        test_metrics = _judge_and_serve(spark, client, best, config, loaded, train, fallback, popularity,
                                        data=data, split_dir=split_dir, parent_id=parent_id)
        summary = {"run_id": parent_id, "best_run_id": best["run_id"], "best_params": best["params"],
                   "val": best["metrics"], "test": test_metrics, "baselines": baselines,
                   "objective": config.metric, "trials_ok": ok, "trials": len(records)}
        log_json(summary, "best.json")
        metric = config.metric
        say(f"[als_search] best {metric}: val {best['metrics'][metric]:.4f}, test "
            f"{test_metrics.get(metric, float('nan')):.4f} (baseline val "
            f"{baselines.get(f'baseline_val_{metric}', float('nan')):.4f}) with {best['params']}")
        return summary


def _judge_and_serve(spark, client, best, config, loaded, train, fallback, popularity, *, data, split_dir,
                     parent_id) -> dict:
    """The best trial's test metrics (on the parent and on its own run) and its served form
    (``recommender``, tag ``recsys.recommender_uri``) on its run; returns the test metrics. The
    logged Spark model is used inside ``loaded_spark_model``: Spark reads its tables lazily."""
    import mlflow

    from recsys.data.movielens import load_movielens
    from recsys.evaluation.protocol import evaluate
    from recsys.models.als import ALSConfig, ALSRecommender

    digest = split_digest(loaded.manifest)
    with temp_artifact_dir() as tmp:
        spark_model_dir = mlflow.artifacts.download_artifacts(
            run_id=best["run_id"], artifact_path=ALS_MODEL_ARTIFACT, dst_path=tmp)
        with loaded_spark_model(spark, spark_model_dir) as pipeline_model:
            recommender = ALSRecommender.from_serving_model(pipeline_model, ALSConfig(**best["params"]))
            test_metrics = evaluate(recommender, train, loaded.test, k=config.k,
                                    relevance_threshold=config.relevance_threshold, fallback=fallback)
            mlflow.log_metrics(finite_metrics(test_metrics, "test_"))
            for name, value in finite_metrics(trial_metrics(test_metrics), "test_").items():
                client.log_metric(best["run_id"], name, value)
            # the candidate's served form, on its own run: top-K lists from its factors
            started_log = time.time()
            movies = load_movielens(spark, data_source(data), progress=say).movies
            with mlflow.start_run(run_id=best["run_id"], nested=True):
                served = log_recommender_model(
                    recommender, train, kind="rating" if config.feedback == "explicit" else "ranking",
                    popularity=popularity, movies=movies, fallback=fallback,
                    spark_model_dir=spark_model_dir,
                    meta={"split_dir": fs.to_uri(split_dir), "split_digest": digest,
                          "feedback": config.feedback, "objective": config.metric,
                          "run_id": best["run_id"], "search_run_id": parent_id})
                mlflow.set_tag(TAG_RECOMMENDER_URI, served.model_uri)  # what promote registers
            mlflow.log_metric("log_recommender_seconds", time.time() - started_log)
    return test_metrics
