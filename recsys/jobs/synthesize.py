"""`synthesize` entry point: a MovieLens-shaped release at any scale."""

from __future__ import annotations

from recsys.core.params import check_bool
from recsys.entry_points import declared
from recsys.mlops.tracking import (
    log_json,
    log_new_params,
    name_run,
    say,
    spark_session,
    stage_run,
)


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
