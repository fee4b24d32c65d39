"""One function per entry point: validate the parameters, load, call the library, log.

Each job opens its MLflow run with :func:`recsys.tracking.stage_run` and logs through
``recsys.tracking`` (the run plumbing); library modules never import mlflow. A job that raises
leaves its run FAILED with the error recorded as the tag ``recsys.error`` and the artifact
``error.txt``. Progress goes through :func:`recsys.tracking.say`, the ``progress`` callable
every library call is given.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
import warnings

from recsys import __version__, fs
from recsys.constants import (
    ALS_MODEL_ARTIFACT,
    DEFAULT_RELEVANCE_THRESHOLD,
    DEFAULT_SPLIT_DIR,
    ITEM_COL,
    RANK_COL,
    RECOMMENDER_ARTIFACT,
    RECOMMENDER_META,
    RECOMMENDER_SPARK_MODEL,
    SCORE_COL,
    SPLIT_PARTS,
    TAG_BEST_RUN,
    TAG_DECISION,
    TAG_FEEDBACK,
    TAG_MODEL_REFIT,
    TAG_OBJECTIVE,
    TAG_RECOMMENDATIONS_REUSED,
    TAG_RECOMMENDER_URI,
    TAG_SEARCH_KEY,
    TAG_SPLIT,
    TAG_SPLIT_REUSED,
    TAG_TRIAL,
    USER_COL,
)
from recsys.entry_points import BUNDLED, declared
from recsys.params import check_bool
from recsys.split import split_digest
from recsys.tracking import (
    adopt_trials,
    find_trial_run,
    finite_metrics,
    kill_stale_runs,
    log_als_model,
    log_json,
    log_new_params,
    log_recommender_model,
    log_spark_input,
    name_run,
    restore_trial_run,
    say,
    spark_session,
    stage_run,
    temp_artifact_dir,
    trial_metrics,
)


def data_source(data: str | None) -> str | None:
    """``None``, ``""`` and ``"bundled"`` all mean the bundled ml-latest-small."""
    return None if not data or data == BUNDLED else data


# ---------------------------------------------------------------- split


@declared("split")
def split(data, split_dir, strategy, fractions, seed, min_user_ratings, overwrite, spark_master, spark_conf):
    """`split` entry point: MovieLens -> ``split_dir/{train,validation,test}`` + manifest.

    Logs: params (strategy, fractions, seed, min_user_ratings, data, split_dir), metrics
    ``<part>_rows|users|items`` and ``split_seconds``, artifact ``manifest.json``, and the
    three partitions as dataset inputs. Returns the manifest.
    """

    from recsys.split import SplitConfig, parse_fractions

    with stage_run("split"):
        if isinstance(fractions, str):
            fractions = parse_fractions(fractions)
        config = SplitConfig(strategy=strategy, fractions=tuple(fractions), seed=seed,
                             min_user_ratings=min_user_ratings)
        name_run(f"split {config.strategy} {'/'.join(f'{f:g}' for f in config.fractions)} seed {config.seed}"
                 + (f" min_user_ratings={config.min_user_ratings}" if config.min_user_ratings else ""))
        overwrite = check_bool("overwrite", overwrite)
        log_new_params({**config.as_params(), "data": data or BUNDLED, "split_dir": split_dir})
        spark = spark_session(spark_master, spark_conf)
        manifest, reused = create_split(spark, data, split_dir, config, overwrite=overwrite)
        log_split(spark, manifest, split_dir, reused)
        return manifest


def create_split(spark, data, split_dir, config, overwrite=False):
    from recsys.data.movielens import load_movielens
    from recsys.split import make_split

    start = time.time()
    ml = load_movielens(spark, data_source(data), progress=say)
    manifest, reused = make_split(spark, ml.ratings, config, split_dir, source=ml.source,
                                  source_checksum=ml.checksum, overwrite=overwrite, progress=say)
    say(f"[split] done in {time.time() - start:.1f}s ({'reused' if reused else 'written'})")
    return manifest, reused


def log_split(spark, manifest: dict, split_dir: str, reused: bool) -> None:
    """Log a split's counts, manifest and partitions (as dataset inputs) to the active run."""
    import mlflow

    from recsys.split import load_split

    mlflow.set_tag(TAG_SPLIT_REUSED, str(reused).lower())
    metrics = {f"{part}_{k}": v for part, c in manifest["counts"].items() for k, v in c.items()}
    mlflow.log_metrics(metrics)
    log_json(manifest, "manifest.json")
    loaded = load_split(spark, split_dir)
    for part in SPLIT_PARTS:
        with warnings.catch_warnings():  # mlflow's int-column hint is about model inputs
            warnings.simplefilter("ignore")
            log_spark_input(loaded.part(part), path=fs.to_uri(fs.join(split_dir, part)), name=part,
                            digest=manifest["digests"][part].split("-", 1)[1][:16],
                            rows=int(manifest["counts"][part]["rows"]))


def ensure_split(spark, data, split_dir):
    """Read ``split_dir``, creating it with the default split when it is missing.

    A split made from another source than ``data`` is an error: results would not be
    comparable with what the user asked for.
    """
    from recsys.split import SplitConfig, load_split, read_manifest

    if read_manifest(spark, split_dir) is None:
        say(f"[split] {split_dir} has no split yet: creating the default one")
        create_split(spark, data, split_dir, SplitConfig())
    loaded = load_split(spark, split_dir)
    if data_source(data) is not None:
        from recsys.data.movielens import source_checksum

        checksum = source_checksum(spark, fs.local_path(data) if fs.is_local(data) else data)
        if checksum != loaded.manifest.get("source_checksum"):
            from recsys.errors import RecsysError

            raise RecsysError(
                f"split_dir {split_dir} was made from {loaded.manifest.get('source')}, not from "
                f"data={data}; run the split for this data (with its own split_dir) first")
    return loaded


# ---------------------------------------------------------------- synthesize


@declared("synthesize")
def synthesize(output, n_users, n_movies, n_ratings, seed, rank, noise, n_twins, selection, format,
               overwrite, spark_master, spark_conf):
    """`synthesize` entry point: a MovieLens-shaped release at any scale (recsys.data.synthetic).

    Logs: params (the config and ``output``), metrics ``ratings``, ``users``,
    ``ratings_per_user_median|p90|max``, ``item_gini``, ``rating_mean``, ``rating_share_<r>``,
    ``generate_seconds``, ``synthesize_seconds``; artifacts ``planted_twins.json`` and
    ``synthetic_stats.json``. Returns the statistics dict.
    """
    import mlflow

    from recsys.data.synthetic import SyntheticConfig, generate

    with stage_run("synthesize"):
        config = SyntheticConfig(n_users=n_users, n_movies=n_movies, n_ratings=n_ratings, seed=seed,
                                 rank=rank, noise=noise, n_twins=n_twins, selection=selection,
                                 format=format)
        name_run(f"synthesize {config.n_ratings} ratings {config.n_users} users {config.n_movies} movies "
                 f"seed {config.seed}")
        log_new_params({**config.as_params(), "output": output})
        spark = spark_session(spark_master, spark_conf)
        stats = generate(spark, config, output, overwrite=check_bool("overwrite", overwrite), progress=say)
        metrics = {k: v for k, v in stats.items() if isinstance(v, (int, float)) and k != "seconds"}
        metrics.update({f"rating_share_{k.replace('.', '_')}": v
                        for k, v in stats["rating_histogram"].items()})
        metrics["synthesize_seconds"] = stats["seconds"]
        mlflow.log_metrics(metrics)
        log_json(stats["planted_twins"], "planted_twins.json")
        log_json(stats, "synthetic_stats.json")
        return stats


# ---------------------------------------------------------------- als, als_search, promote


def fit_and_judge(als_config, held):
    """Fit one ALS on ``held.train`` and judge it on ``held`` (a
    :class:`recsys.evaluation.HeldOut` whose fallback is also the ALS's biases):
    ``(recommender, metrics, seconds)``."""
    from recsys.models.als import ALSRecommender

    start = time.time()
    recommender = ALSRecommender(als_config, baseline=held.fallback).fit(held.train)  # biases fitted once
    fit_seconds = time.time() - start
    metrics = held.evaluate(recommender)
    eval_seconds = time.time() - start - fit_seconds
    return recommender, metrics, {"fit_seconds": fit_seconds, "eval_seconds": eval_seconds}


def _cached_split(spark, data, split_dir):
    """The split read once, train and validation cached and materialised, plus the bias fallback."""
    from recsys.models.bias import BiasBaseline

    loaded = ensure_split(spark, data, split_dir)
    train, validation = loaded.train.cache(), loaded.validation.cache()
    train.count(), validation.count()
    fallback = BiasBaseline().fit(train)
    fallback.user_bias.count(), fallback.item_bias.count()
    return loaded, train, validation, fallback


@declared("als")
def als(data, split_dir, rank, reg_param, max_iter, alpha, implicit_prefs, nonnegative, seed, biases, k,
        relevance_threshold, spark_master, spark_conf):
    """`als` entry point: fit one ALS on train, judge it on validation, log the model.

    Logs: params (every ``ALSConfig`` field, ``k``, ``relevance_threshold``, ``data``,
    ``split_dir``); tags ``recsys.feedback`` (explicit/implicit) and ``recsys.split_digest``;
    metrics ``val_*`` (rmse, mae, coverage only in explicit mode; precision/recall/ndcg/map@k
    always), ``fit_seconds``, ``eval_seconds``, ``log_model_seconds``; artifact ``model`` (see
    :func:`log_als_model`). Returns ``{"run_id", "metrics"}``.
    """
    import mlflow

    from recsys.evaluation import HeldOut, check_eval_params
    from recsys.models.als import ALSConfig

    with stage_run("als") as run:
        config = ALSConfig(rank=rank, reg_param=reg_param, max_iter=max_iter, alpha=alpha,
                           implicit_prefs=implicit_prefs, nonnegative=nonnegative, biases=biases,
                           seed=seed)
        k, relevance_threshold = check_eval_params(k, relevance_threshold)
        name_run(f"als {config.feedback} rank={config.rank} reg_param={config.reg_param:g}"
                 + (f" alpha={config.alpha:g}" if config.implicit_prefs else ""))
        log_new_params({**config.as_params(), "k": k, "relevance_threshold": relevance_threshold,
                        "data": data or BUNDLED, "split_dir": split_dir})
        mlflow.set_tag(TAG_FEEDBACK, config.feedback)
        spark = spark_session(spark_master, spark_conf)
        loaded, train, validation, fallback = _cached_split(spark, data, split_dir)
        mlflow.set_tag(TAG_SPLIT, split_digest(loaded.manifest))
        say(f"[als] {config.feedback} ALS {config.as_params()}")
        held = HeldOut(train, validation, k=k, relevance_threshold=relevance_threshold, fallback=fallback)
        try:
            recommender, metrics, seconds = fit_and_judge(config, held)
        finally:
            held.release()
        start = time.time()
        log_als_model(recommender, fallback)
        seconds["log_model_seconds"] = time.time() - start
        mlflow.log_metrics({**finite_metrics(metrics, "val_"), **seconds})
        shown = ", ".join(f"{key} {value:.4f}" for key, value in metrics.items() if not key.startswith("n_"))
        say(f"[als] validation: {shown} (fit {seconds['fit_seconds']:.1f}s)")
        return {"run_id": run.info.run_id, "metrics": metrics}


def _judge_baselines(train, validation, test, fallback, k, relevance_threshold):
    """``(metrics, popularity)``: popularity (count) ranking metrics and the bias baseline's RMSE
    on validation and test, as ``baseline_<part>_<key>``, and the fitted popularity model (the
    served recommender's cold-start list)."""
    from recsys.evaluation import evaluate, rating_metrics
    from recsys.models.popularity import PopularityRecommender

    popularity = PopularityRecommender(kind="count").fit(train)
    out = {}
    for part, heldout in (("val", validation), ("test", test)):
        metrics = evaluate(popularity, train, heldout, k=k, relevance_threshold=relevance_threshold)
        metrics.update(rating_metrics(fallback.predict(heldout)))
        out.update(finite_metrics(metrics, f"baseline_{part}_"))
    return out, popularity


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
    (:func:`recsys.tracking.restore_trial_run`), and a restored best trial is refitted once to
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

    from recsys import plots
    from recsys.data.movielens import load_movielens
    from recsys.evaluation import HeldOut, evaluate
    from recsys.models.als import ALSConfig, ALSRecommender
    from recsys.search import (
        SearchConfig,
        best_trial,
        load_space,
        released_caches,
        resolve_space_path,
        run_search,
        search_key,
        state_path,
        trial_name,
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
        loaded, train, validation, fallback = _cached_split(spark, data, split_dir)
        key = search_key(config, search_space, loaded.manifest.get("digests", {}))
        digest = split_digest(loaded.manifest)
        parent_id = parent.info.run_id
        log_new_params({**config.as_params(), "space": space, "data": data or BUNDLED,
                        "split_dir": split_dir, "search_key": key})
        mlflow.set_tags({TAG_FEEDBACK: config.feedback, TAG_OBJECTIVE: config.metric,
                         TAG_SEARCH_KEY: key, TAG_SPLIT: digest})
        mlflow.log_artifact(resolve_space_path(space))
        client = mlflow.MlflowClient()
        kill_stale_runs(client, parent.info.experiment_id, key, parent_id)
        say(f"[als_search] {config.feedback} ALS, objective {config.metric} "
            f"({objective_spec.direction}imise), {config.max_evals} trials, key {key}")

        baselines, popularity = _judge_baselines(train, validation, loaded.test, fallback, config.k,
                                                 config.relevance_threshold)
        mlflow.log_metrics(baselines)
        if config.feedback == "explicit":  # every trial fits on these residuals: cache them once,
            fallback.cached_residuals(train)  # before the trials (whose own caches are released)

        def trial_tags(index):  # a trial's run, evaluated here or restored from the state
            return {TAG_FEEDBACK: config.feedback, TAG_OBJECTIVE: config.metric, TAG_SEARCH_KEY: key,
                    TAG_SPLIT: digest, TAG_TRIAL: str(index)}

        def trial_params(als_params):
            return {**als_params, "k": config.k, "relevance_threshold": config.relevance_threshold}

        # what every trial's evaluation shares, cached before the trials (which release their own)
        held = HeldOut(train, validation, k=config.k, relevance_threshold=config.relevance_threshold,
                       fallback=fallback).prepare(ratings=config.feedback == "explicit")

        def evaluate_trial(index, als_config):
            with stage_run("als_trial", run_name=trial_name(als_config, search_space),
                           tags=trial_tags(index)) as child:
                mlflow.log_params(trial_params(als_config.as_params()))
                with released_caches(spark):
                    recommender, metrics, seconds = fit_and_judge(als_config, held)
                    mlflow.log_metrics({**finite_metrics(trial_metrics(metrics), "val_"), **seconds})
                    log_als_model(recommender, fallback, validate=False)
                return {"metrics": metrics, "run_id": child.info.run_id}

        def restore_trial(index, rec):  # a finished trial of the state, in this store
            found = find_trial_run(client, rec, parent.info.experiment_id)
            if found or not rec.get("run_id"):  # no id: a failed trial, never adopted either
                return found or rec.get("run_id")
            restored = restore_trial_run(
                client, parent.info.experiment_id, parent_id, rec,
                run_name=trial_name(ALSConfig(**rec["params"]), search_space),
                tags=trial_tags(index), params=trial_params(rec["params"]))
            say(f"[als_search] trial {index}: run {rec['run_id']} is not in this tracking store; "
                f"re-logged from the search state as {restored}")
            return restored

        records = run_search(spark, config, search_space, evaluate_trial,
                             state_file=state_path(split_dir, key), key=key, progress=say,
                             restore_trial=restore_trial)
        adopt_trials(client, records, parent_id)
        table = trials_table(records)
        best = best_trial(records, objective_spec)
        ok = sum(r["status"] == "ok" for r in records)
        mlflow.log_metrics({"trials_ok": ok, "trials_failed": len(records) - ok,
                            "search_seconds": time.time() - started})
        with temp_artifact_dir() as tmp:
            table.to_csv(os.path.join(tmp, "trials.csv"), index=False)
            mlflow.log_artifact(os.path.join(tmp, "trials.csv"))
            plot_dir = os.path.join(tmp, "plots")
            os.makedirs(plot_dir)
            plots.search_landscape(table, config.metric, objective_spec.direction,
                                   os.path.join(plot_dir, "search_landscape.png"))
            reference = baselines.get(f"baseline_val_{config.metric}")
            label = "bias baseline" if config.metric == "rmse" else "popularity (count)"
            plots.objective_per_trial(table, config.metric, objective_spec.direction, reference, label,
                                      os.path.join(plot_dir, "objective_per_trial.png"))
            mlflow.log_artifacts(plot_dir, "plots")
        if best is None:
            from recsys.errors import RecsysError

            raise RecsysError(f"all {len(records)} trials failed; first error: {records[0]['error']}")

        mlflow.set_tag(TAG_BEST_RUN, best["run_id"])
        mlflow.log_params({f"best_{name}": value for name, value in best["params"].items()})
        mlflow.log_metrics(finite_metrics(best["metrics"], "val_"))
        # test numbers, once, for the one model that is a candidate for promotion
        best_config = ALSConfig(**best["params"])
        if not client.list_artifacts(best["run_id"], ALS_MODEL_ARTIFACT):  # restored from the state
            with mlflow.start_run(run_id=best["run_id"], nested=True), released_caches(spark):
                recommender, refit, _ = fit_and_judge(best_config, held)
                log_als_model(recommender, fallback, validate=False)
                note = (f"{config.metric} {refit.get(config.metric, float('nan')):.6g} "
                        f"(recorded {best['metrics'][config.metric]:.6g})")
                mlflow.set_tag(TAG_MODEL_REFIT, note)
            say(f"[als_search] best trial {best['run_id']} was restored without its model: refitted, {note}")
        held.release()
        with temp_artifact_dir() as tmp:
            spark_model_dir = mlflow.artifacts.download_artifacts(
                run_id=best["run_id"], artifact_path=ALS_MODEL_ARTIFACT, dst_path=tmp)
            pipeline_model = mlflow.spark.load_model(spark_model_dir)
            recommender = ALSRecommender.from_serving_model(pipeline_model, best_config)
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
        summary = {"run_id": parent_id, "best_run_id": best["run_id"], "best_params": best["params"],
                   "val": best["metrics"], "test": test_metrics, "baselines": baselines,
                   "objective": config.metric, "trials_ok": ok, "trials": len(records)}
        log_json(summary, "best.json")
        metric = config.metric
        say(f"[als_search] best {metric}: val {best['metrics'][metric]:.4f}, test "
            f"{test_metrics.get(metric, float('nan')):.4f} (baseline val "
            f"{baselines.get(f'baseline_val_{metric}', float('nan')):.4f}) with {best['params']}")
        return summary


@declared("promote")
def promote(run_id, model_name, force):
    """`promote` entry point: register a search's best model and move aliases (recsys.registry).

    ``run_id``: an als_search run (default: the latest finished one in the experiment) or a run
    with a model and ``test_*`` metrics. ``model_name``: default by the search's objective,
    ``recsys-als`` for a ranking metric, ``recsys-als-ratings`` for RMSE. Logs params ``run_id``
    (as given), ``source_run_id`` (resolved), ``model_run_id``, ``model_name`` (as given),
    ``registered_model_name`` (resolved), ``force``; metrics ``candidate_test_<objective>``,
    ``champion_test_<objective>`` (the champion before this run), ``baseline_test_<objective>``,
    ``model_version``; tag ``recsys.decision``
    (promoted/kept/already_champion); artifacts ``promotion.json`` (this decision) and
    ``promotion_history.csv`` (every decision on the model so far). Returns the decision dict.
    """
    import mlflow

    from recsys import registry
    with stage_run("promote") as run:
        force = check_bool("force", force)
        client = mlflow.MlflowClient()
        if model_name:  # before any work: the name may become a path
            registry.check_model_name(model_name)
        candidate = registry.find_candidate(client, run.info.experiment_id, run_id or "")
        given, model_name = model_name, model_name or registry.default_model_name(candidate.objective.metric)
        name_run(f"promote {model_name} from run {candidate.source_run_id[:8]}")
        # model_name as given (under `mlflow run` MLflow has logged it already, "" included);
        # registered_model_name is the one used
        log_new_params({"run_id": run_id or "", "source_run_id": candidate.source_run_id,
                        "model_run_id": candidate.model_run_id, "model_name": given,
                        "registered_model_name": model_name, "force": force})
        result = registry.promote(client, candidate, model_name, force=force, promote_run_id=run.info.run_id)
        metric = result["objective"]
        metrics = {f"candidate_test_{metric}": result["candidate_score"], "model_version": result["version"],
                   f"champion_test_{metric}": result["champion_score"],
                   f"baseline_test_{metric}": result["baseline_score"]}
        mlflow.log_metrics({key: value for key, value in metrics.items() if value is not None})
        mlflow.set_tag(TAG_DECISION, result["decision"])
        log_json(result, "promotion.json")
        history = registry.promotion_history(client, model_name)
        with temp_artifact_dir() as tmp:
            history.to_csv(os.path.join(tmp, "promotion_history.csv"), index=False)
            mlflow.log_artifact(os.path.join(tmp, "promotion_history.csv"))
        say(f"[promote] {model_name} v{result['version']} "
            f"({'registered' if result['registered'] else 'already registered'}): "
            f"{result['decision']} - {result['reason']}")
        return result


# ---------------------------------------------------------------- baseline


@declared("baseline")
def baseline(data, split_dir, kind, damping, k, relevance_threshold, evaluate_test, spark_master, spark_conf):
    """`baseline` entry point: a popularity recommender judged by ``recsys.evaluation``.

    Logs: params (``kind``, ``damping``, ``k``, ``relevance_threshold``, ``evaluate_test``,
    ``bias_damping``, ``data``, ``split_dir``); metrics ``val_<key>`` of the popularity model
    (keys of ``recsys.constants``: rmse/mae/coverage only for ``damped_mean``),
    ``val_bias_rmse`` / ``val_bias_mae`` of the bias baseline, the same with ``test_`` only
    when ``evaluate_test``, ``fit_seconds``, ``eval_seconds``; artifacts ``top100.csv`` (rank,
    movieId, title, genres, n_ratings, mean_rating, score) and ``metrics.png``. Returns the
    logged metrics.
    """
    import mlflow

    from recsys import plots
    from recsys.data.movielens import load_movielens
    from recsys.evaluation import check_eval_params, evaluate, rating_metrics
    from recsys.models.bias import BiasBaseline
    from recsys.models.popularity import PopularityConfig, PopularityRecommender

    with stage_run("baseline"):
        config = PopularityConfig(kind=kind, damping=damping)
        name_run(f"baseline popularity {config.kind}"
                 + (f" damping={config.damping:g}" if config.kind == "damped_mean" else ""))
        k, relevance_threshold = check_eval_params(k, relevance_threshold)
        evaluate_test = check_bool("evaluate_test", evaluate_test)
        bias = BiasBaseline()
        log_new_params({**config.as_params(), "k": k, "relevance_threshold": relevance_threshold,
                         "evaluate_test": str(evaluate_test).lower(), "bias_damping": bias.damping,
                         "data": data or BUNDLED, "split_dir": split_dir})
        spark = spark_session(spark_master, spark_conf)
        parts = ensure_split(spark, data, split_dir)

        start = time.time()
        model = PopularityRecommender(config).fit(parts.train)
        bias.fit(parts.train)
        metrics = {"fit_seconds": time.time() - start}
        say(f"[baseline] fitted {model.name} and the bias baseline in {metrics['fit_seconds']:.1f}s")

        start = time.time()
        held = [("val", parts.validation)] + ([("test", parts.test)] if evaluate_test else [])
        for prefix, heldout in held:
            found = evaluate(model, parts.train, heldout, k=k, relevance_threshold=relevance_threshold,
                             fallback=bias, progress=say)
            metrics.update({f"{prefix}_{key}": value for key, value in found.items()})
            found = rating_metrics(bias.predict(heldout))
            metrics.update({f"{prefix}_bias_{key}": value for key, value in found.items()})
        metrics["eval_seconds"] = time.time() - start
        mlflow.log_metrics(metrics)
        say("[baseline] " + ", ".join(f"{key} {value:.4f}" for key, value in sorted(metrics.items())))

        movies = load_movielens(spark, data_source(data), progress=say).movies
        top = (model.ranking(100).join(movies.select(ITEM_COL, "title", "genres"), ITEM_COL, "left")
               .selectExpr(RANK_COL, ITEM_COL, "title", "genres", "n AS n_ratings",
                           "mean AS mean_rating", SCORE_COL)
               .orderBy(RANK_COL).toPandas())  # 100 rows
        plotted = {key: value for key, value in metrics.items()
                   if key.startswith("val_") and "n_users" not in key}
        with temp_artifact_dir() as tmp:
            top.to_csv(os.path.join(tmp, "top100.csv"), index=False)
            plots.metrics_bar(plotted, os.path.join(tmp, "metrics.png"),
                              title=f"{model.name}: validation metrics (K={k})")
            mlflow.log_artifact(os.path.join(tmp, "top100.csv"))
            mlflow.log_artifact(os.path.join(tmp, "metrics.png"))
        return metrics


# ---------------------------------------------------------------- twins


@declared("twins")
def twins(data, min_ratings, n_pairs, n_hashes, method, target_similarity, bucket_cap, n_random, min_common,
          compare_exact, seed, spark_master, spark_conf):
    """`twins` entry point: "movie twins" by MinHash LSH on the whole ratings set, validated by
    the Pearson correlation of their ratings against random pairs (``recsys.twins``).

    Logs: params (every ``TwinsConfig`` field, ``data``); metrics ``users_kept``,
    ``users_left_out``, ``movies``, ``candidate_pairs``, ``scored_pairs``, ``size_floor``,
    ``bands``, ``rows``, bucket sizes,
    ``recall`` (with ``compare_exact``), ``top_jaccard`` / ``last_jaccard``, ``twins_pearson_*``,
    ``random_pearson_*`` (count, defined, undefined, mean, median, std, ci_low, ci_high),
    ``pearson_difference``, ``pearson_diff_ci_low|high``, ``pearson_p_value`` and
    ``<stage>_seconds``; artifacts ``twins.csv`` (rank, userA, userB, jaccard, size_a, size_b,
    common, pearson), ``random_pairs.csv``, ``validation.json``, ``twins_pearson_hist.png``,
    ``twins_jaccard.png`` (and ``exact_twins.csv`` with ``compare_exact``). Returns the metrics.
    """
    import mlflow
    import pandas as pd

    from recsys import plots
    from recsys.data.movielens import load_movielens
    from recsys.twins import TwinsConfig, find_twins, validate_twins

    with stage_run("twins"):
        config = TwinsConfig(min_ratings=min_ratings, n_pairs=n_pairs, n_hashes=n_hashes, method=method,
                             target_similarity=target_similarity, bucket_cap=bucket_cap,
                             n_random=n_random, min_common=min_common, compare_exact=compare_exact,
                             seed=seed)
        name_run(f"twins minhash {config.method} {config.n_pairs} pairs")
        log_new_params({**config.as_params(), "data": data or BUNDLED})
        start = time.time()
        spark = spark_session(spark_master, spark_conf)
        ratings = load_movielens(spark, data_source(data), progress=say).ratings
        metrics = {"load_seconds": time.time() - start}
        result = find_twins(ratings, config, progress=say)
        twins_rows, random_rows, validation = validate_twins(spark, ratings, result, config, progress=say)
        metrics.update({key: float(value) for key, value in result.stats.items()})
        metrics["validation_seconds"] = validation["seconds"]
        if twins_rows:
            metrics["top_jaccard"] = twins_rows[0]["jaccard"]
            metrics["last_jaccard"] = twins_rows[-1]["jaccard"]
        for group in ("twins", "random"):
            metrics.update({f"{group}_pearson_{key}": value for key, value in validation[group].items()
                            if value is not None})
        metrics.update({f"pearson_{key}": value for key, value in validation["comparison"].items()
                        if value is not None})
        metrics["total_seconds"] = time.time() - start
        mlflow.log_metrics(metrics)
        validation = {**validation, "top_pair": twins_rows[0] if twins_rows else None,
                      "stats": result.stats, "config": config.as_params()}
        with temp_artifact_dir() as tmp:
            table = pd.DataFrame(twins_rows, columns=["userA", "userB", "jaccard", "size_a", "size_b",
                                                      "common", "pearson"])
            table.insert(0, "rank", range(1, len(table) + 1))
            files = {"twins.csv": table,
                     "random_pairs.csv": pd.DataFrame(random_rows,
                                                      columns=["userA", "userB", "common", "pearson"])}
            if result.exact_top is not None:
                files["exact_twins.csv"] = pd.DataFrame(result.exact_top)
            for name, frame in files.items():
                frame.to_csv(os.path.join(tmp, name), index=False)
            plots.twins_pearson_hist([r["pearson"] for r in twins_rows], [r["pearson"] for r in random_rows],
                                     os.path.join(tmp, "twins_pearson_hist.png"))
            plots.twins_jaccard([r["jaccard"] for r in twins_rows], os.path.join(tmp, "twins_jaccard.png"),
                                title=f"top {len(twins_rows)} pairs by exact Jaccard ({config.method})")
            for name in [*files, "twins_pearson_hist.png", "twins_jaccard.png"]:
                mlflow.log_artifact(os.path.join(tmp, name))
        log_json(validation, "validation.json")
        top = twins_rows[0] if twins_rows else None
        if top:
            say(f"[twins] top pair {top['userA']}-{top['userB']} Jaccard {top['jaccard']:.3f}; mean "
                f"Pearson twins {validation['twins']['mean']}, random {validation['random']['mean']}, "
                f"p={validation['comparison']['p_value']}")
        say(f"[twins] done in {metrics['total_seconds']:.1f}s")
        return metrics


# ---------------------------------------------------------------- recommend

#: Written inside the output next to the Parquet files; "_" makes Spark's readers skip it.
RECOMMENDATIONS_MANIFEST = "_recsys_recommendations.json"
SAMPLE_USERS = 100


def resolve_recommender(client, model_uri: str) -> tuple[str, dict]:
    """``model_uri`` -> (URI to download, ``{model_name, model_version, model_run_id}``).

    Accepts ``models:/<name>@<alias>``, ``models:/<name>/<version>``, ``runs:/<run id>/<path>``
    or a bare run id (its ``recommender`` artifact). An alias is pinned to the version it names
    now, so the whole job reads one model. A missing model, version, alias or run is a
    :class:`RecsysError` naming it.
    """
    from mlflow.exceptions import MlflowException

    from recsys.errors import RecsysError

    uri = (model_uri or "").strip()
    try:
        if uri.startswith("models:/"):
            rest = uri[len("models:/"):]
            if "@" in rest:
                name, alias = rest.split("@", 1)
                version = client.get_model_version_by_alias(name, alias)
            elif "/" in rest and rest.rsplit("/", 1)[1].isdigit():
                name, number = rest.rsplit("/", 1)
                version = client.get_model_version(name, number)
            else:
                raise RecsysError(f"model_uri={model_uri!r}: give models:/<name>@<alias> or "
                                  "models:/<name>/<version>")
            info = {"model_name": name, "model_version": str(version.version),
                    "model_run_id": version.run_id or ""}
            return f"models:/{name}/{version.version}", info
        if uri.startswith("runs:/"):
            run_id = uri[len("runs:/"):].split("/", 1)[0]
        elif re.fullmatch(r"[0-9a-f]{32}", uri):
            run_id, uri = uri, f"runs:/{uri}/{RECOMMENDER_ARTIFACT}"
        else:
            raise RecsysError(f"model_uri={model_uri!r} is not a model URI: give models:/<name>@<alias>, "
                              "models:/<name>/<version>, runs:/<run id>/<path> or a run id")
        client.get_run(run_id)
        return uri, {"model_name": "", "model_version": "", "model_run_id": run_id}
    except MlflowException as err:
        raise RecsysError(f"model_uri={model_uri!r}: not found in the MLflow registry/tracking store "
                          f"{client.tracking_uri}: {err.message}") from err


def _recommender_parts(download_uri: str, model_uri: str, local_dir: str) -> tuple[str, dict]:
    """Download the model; return (local Spark model dir, meta dict). Checks the layout."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from recsys.errors import RecsysError

    try:
        root = mlflow.artifacts.download_artifacts(artifact_uri=download_uri, dst_path=local_dir)
    except MlflowException as err:
        raise RecsysError(f"model_uri={model_uri!r}: could not download {download_uri}: "
                          f"{err.message}") from err
    spark_dir, meta_path = os.path.join(root, RECOMMENDER_SPARK_MODEL), os.path.join(root, RECOMMENDER_META)
    if not os.path.isdir(spark_dir) or not os.path.isfile(meta_path):
        raise RecsysError(f"model_uri={model_uri!r} is not a recsys recommender: it has no "
                          f"{RECOMMENDER_SPARK_MODEL}/ and {RECOMMENDER_META}")
    with open(meta_path, encoding="utf-8") as fh:
        meta = json.load(fh)
    missing = [key for key in ("split_dir", "split_digest", "kind") if key not in meta]
    if missing:
        raise RecsysError(f"model_uri={model_uri!r}: {RECOMMENDER_META} lacks {', '.join(missing)}")
    return spark_dir, meta


def _model_split(spark, data, split_dir, meta: dict):
    """The split the model was trained on: ``split_dir`` if given (the default only when it holds
    a split), else the model's own; a split of other content is an error."""
    from recsys.errors import RecsysError
    from recsys.split import read_manifest

    chosen = split_dir or meta["split_dir"]
    if split_dir == DEFAULT_SPLIT_DIR and read_manifest(spark, split_dir) is None \
            and read_manifest(spark, meta["split_dir"]) is not None:
        chosen = meta["split_dir"]
    loaded = ensure_split(spark, data, chosen)
    if split_digest(loaded.manifest) != meta["split_digest"]:
        raise RecsysError(f"split_dir {chosen} (digest {split_digest(loaded.manifest)}) is not the split "
                          f"the model was trained on ({meta['split_dir']}, digest {meta['split_digest']}); "
                          "pass that split's directory as split_dir")
    return chosen, loaded


@declared("recommend")
def recommend(model_uri, users, output, k, split_dir, data, spark_master, spark_conf):
    """`recommend` entry point: top-``k`` unseen movies for every user (or those in ``users``).

    ``model_uri``: see :func:`resolve_recommender`. ``users``: "" (every user the model has
    factors for) or a file/URI of user ids (:func:`recsys.batch.read_users`); users the model
    does not know get the most-rated training movies. Seen = the train part of the model's
    split (``split_dir`` if it holds one, else the model's ``meta.json`` split_dir; refused if
    its digest differs). Writes ``output``: Parquet ``userId, rank, movieId, score`` plus
    ``_recsys_recommendations.json`` (what made it), through a temporary sibling renamed into
    place. An existing ``output`` made from the same model version/run, k, users and split is
    reused; anything else there is an error (delete it or choose another output).

    Logs: params ``model_uri``, ``model_name``, ``model_version``, ``model_run_id``,
    ``model_kind``, ``k``, ``users``, ``output``, ``split_dir``, ``data``; metrics = the
    returned counts (``users``, ``known_users``, ``unknown_users``, ``movies``, ``rows``) and
    ``recommend_seconds``, ``write_seconds``; tag ``recsys.recommendations_reused``; artifact
    ``sample.csv`` (the first 100 users' lists with titles). Returns the manifest dict.
    """
    import mlflow

    from recsys.batch import read_users, recommend_all
    from recsys.errors import RecsysError
    from recsys.evaluation import check_eval_params
    from recsys.models.als import ALSConfig, ALSRecommender
    from recsys.models.popularity import PopularityRecommender
    from recsys.split import remove_stale_temps, temp_dir_name

    # the model files stay until the job ends: Spark reads the factor tables lazily
    with stage_run("recommend"), tempfile.TemporaryDirectory(prefix="recsys-model-") as tmp:
        k, _ = check_eval_params(k, DEFAULT_RELEVANCE_THRESHOLD)
        name_run(f"recommend {model_uri} k={k}")
        users = (users or "").strip()
        client = mlflow.MlflowClient()
        download_uri, info = resolve_recommender(client, model_uri)
        log_new_params({"model_uri": model_uri, **info, "k": k, "users": users, "output": output,
                        "data": data or BUNDLED})
        spark = spark_session(spark_master, spark_conf)
        spark_dir, meta = _recommender_parts(download_uri, model_uri, tmp)
        pipeline_model = mlflow.spark.load_model(spark_dir)
        user_factors, item_factors = ALSRecommender.from_serving_model(pipeline_model, ALSConfig()).factors()
        chosen_split, loaded = _model_split(spark, data, split_dir, meta)
        log_new_params({"split_dir": chosen_split, "model_kind": meta["kind"]})
        key = {**info, "k": k, "users": users, "split_digest": meta["split_digest"]}

        existing = fs.join(output, RECOMMENDATIONS_MANIFEST)
        if fs.exists(spark, existing):
            manifest = json.loads(fs.read_text(spark, existing))
            if manifest.get("key") != key:
                raise RecsysError(f"output {output} holds recommendations made with {manifest.get('key')}, "
                                  f"not {key}; delete it or choose another output")
            say(f"[recommend] {output} already holds these recommendations: reused")
            mlflow.set_tag(TAG_RECOMMENDATIONS_REUSED, "true")
        elif fs.exists(spark, output):
            raise RecsysError(f"output {output} exists and is not a recsys recommendations directory "
                              f"(no {RECOMMENDATIONS_MANIFEST}); delete it or choose another output")
        else:
            mlflow.set_tag(TAG_RECOMMENDATIONS_REUSED, "false")
            wanted = read_users(spark, users) if users else None
            popular = PopularityRecommender(kind="count").fit(loaded.train)
            start = time.time()
            recs, counts = recommend_all(user_factors, item_factors, loaded.train, k, users=wanted,
                                         popular=popular, progress=say)
            recs = recs.cache()
            counts["rows"] = recs.count()
            counts["recommend_seconds"] = time.time() - start
            say(f"[recommend] {counts['rows']} rows for {counts['users']} users "
                f"({counts['unknown_users']} unknown) in {counts['recommend_seconds']:.1f}s")
            start = time.time()
            remove_stale_temps(spark, output, progress=say)
            tmp_out = temp_dir_name(output)
            recs.sortWithinPartitions(USER_COL, RANK_COL).write.parquet(fs.to_uri(tmp_out))
            recs.unpersist()
            manifest = {"key": key, "model_uri": model_uri, "counts": counts, "split_dir": chosen_split,
                        "columns": [USER_COL, RANK_COL, ITEM_COL, SCORE_COL], "version": __version__}
            fs.write_text(spark, fs.join(tmp_out, RECOMMENDATIONS_MANIFEST), json.dumps(manifest, indent=2))
            if fs.is_local(output):
                os.makedirs(os.path.dirname(fs.local_path(output)), exist_ok=True)
            fs.rename(spark, tmp_out, output)
            counts["write_seconds"] = manifest["counts"]["write_seconds"] = time.time() - start
            fs.write_text(spark, existing, json.dumps(manifest, indent=2))
        mlflow.log_metrics({name: float(value) for name, value in manifest["counts"].items()})
        _log_recommendation_sample(spark, output, data, loaded.manifest)
        return manifest


def _log_recommendation_sample(spark, output: str, data, split_manifest: dict) -> None:
    """Log ``sample.csv``: the lists of the ``SAMPLE_USERS`` smallest user ids, with titles
    (from ``data``, else the split's source; left empty when that cannot be read)."""
    import mlflow
    from pyspark.sql import functions as F

    from recsys.data.movielens import load_movielens

    recs = spark.read.parquet(fs.to_uri(output))
    first = recs.select(USER_COL).distinct().orderBy(USER_COL).limit(SAMPLE_USERS)
    sample = recs.join(F.broadcast(first), USER_COL, "left_semi")
    try:
        source = data_source(data) or split_manifest.get("source")
        if not source:  # never the bundled titles for another data set's ids
            raise ValueError("the split's manifest names no source")
        movies = load_movielens(spark, source, progress=say).movies
        sample = sample.join(movies.select(ITEM_COL, "title", "genres"), ITEM_COL, "left")
    except Exception as err:  # titles are a convenience: never fail the job for them
        say(f"[recommend] no titles in sample.csv ({type(err).__name__}: {err})")
        sample = sample.withColumn("title", F.lit(None).cast("string")).withColumn("genres", F.lit(None))
    table = (sample.select(USER_COL, RANK_COL, ITEM_COL, SCORE_COL, "title", "genres")
             .orderBy(USER_COL, RANK_COL).toPandas())  # at most SAMPLE_USERS x k rows
    with temp_artifact_dir() as tmp:
        table.to_csv(os.path.join(tmp, "sample.csv"), index=False)
        mlflow.log_artifact(os.path.join(tmp, "sample.csv"))


# ---------------------------------------------------------------- main pipeline


@declared("main")
def pipeline(data, split_dir, ranking_evals, rating_evals, max_iter, spark_master, spark_conf):
    """`main` entry point: every stage in order, each a nested run under one parent run.

    split -> baseline -> ranking search (implicit, ``precision_at_k``) + promote to
    ``recsys-als`` -> rating search (explicit, RMSE) + promote to ``recsys-als-ratings`` ->
    ``recommend`` (top-K lists for every user from the recommender just judged) -> twins.
    ``ranking_evals`` / ``rating_evals``: trials of each search; ``max_iter``: ALS sweeps per trial.
    Returns ``{stage: result}``.
    """
    spark = {"spark_master": spark_master, "spark_conf": spark_conf}
    where = {"data": data, "split_dir": split_dir}
    out = {}
    with stage_run("main"):
        log_new_params({"data": data or BUNDLED, "split_dir": split_dir, "ranking_evals": ranking_evals,
                        "rating_evals": rating_evals, "max_iter": max_iter})
        out["split"] = split(**where, **spark)
        out["baseline"] = baseline(**where, **spark)
        searches = (("ranking", "implicit", ranking_evals), ("rating", "explicit", rating_evals))
        for role, feedback, evals in searches:
            search = als_search(**where, feedback=feedback, max_evals=evals, max_iter=max_iter, **spark)
            out[f"{role}_search"] = search
            out[f"{role}_promote"] = promote(run_id=search["run_id"])
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
        parent = split_dir.rstrip("/").rsplit("/", 1)[0] if "/" in split_dir.rstrip("/") else "."
        output = fs.join(parent, "recommendations", f"{ranking['model_name']}-v{ranking['version']}")
        out["recommend"] = recommend(model_uri=model_uri, output=output, split_dir=split_dir, data=data,
                                     **spark)
        out["twins"] = twins(data=data, **spark)
    return out
