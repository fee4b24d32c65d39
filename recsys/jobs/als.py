"""`als` entry point: one ALS fitted on train and judged on validation."""

from __future__ import annotations

import time

from recsys.core.constants import (
    TAG_FEEDBACK,
    TAG_SPLIT,
)
from recsys.data.split import split_digest
from recsys.entry_points import BUNDLED, declared
from recsys.jobs.common import (
    cached_split,
)
from recsys.mlops.tracking import (
    finite_metrics,
    log_als_model,
    log_new_params,
    name_run,
    say,
    spark_session,
    stage_run,
)
from recsys.search.run import fit_and_judge


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

    from recsys.evaluation.protocol import HeldOut, check_eval_params
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
        loaded, train, validation, fallback = cached_split(spark, data, split_dir)
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
