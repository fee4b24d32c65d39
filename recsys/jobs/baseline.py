"""`baseline` entry point: the popularity recommender and the bias baseline, judged."""

from __future__ import annotations

import os
import time

from recsys.core.constants import (
    ITEM_COL,
    RANK_COL,
    SCORE_COL,
)
from recsys.core.params import check_bool
from recsys.entry_points import BUNDLED, declared
from recsys.jobs.common import (
    data_source,
    ensure_split,
)
from recsys.mlops.tracking import (
    log_new_params,
    name_run,
    say,
    spark_session,
    stage_run,
    temp_artifact_dir,
)


@declared("baseline")
def baseline(data, split_dir, kind, damping, k, relevance_threshold, evaluate_test, spark_master, spark_conf):
    """`baseline` entry point: a popularity recommender judged by ``recsys.evaluation``.

    Logs: params (``kind``, ``damping``, ``k``, ``relevance_threshold``, ``evaluate_test``,
    ``bias_damping``, ``data``, ``split_dir``); metrics ``val_<key>`` of the popularity model
    (keys of ``recsys.core.constants``: rmse/mae/coverage only for ``damped_mean``),
    ``val_bias_rmse`` / ``val_bias_mae`` of the bias baseline, the same with ``test_`` only
    when ``evaluate_test``, ``fit_seconds``, ``eval_seconds``; artifacts ``top100.csv`` (rank,
    movieId, title, genres, n_ratings, mean_rating, score) and ``metrics.png``. Returns the
    logged metrics.
    """
    import mlflow

    from recsys.data.movielens import load_movielens
    from recsys.evaluation.protocol import check_eval_params, evaluate, rating_metrics
    from recsys.mlops import plots
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
