"""`twins` entry point: movie twins and their Pearson validation."""

from __future__ import annotations

import os
import time

from recsys.entry_points import BUNDLED, declared
from recsys.jobs.common import (
    data_source,
)
from recsys.mlops.tracking import (
    log_json,
    log_new_params,
    name_run,
    say,
    spark_session,
    stage_run,
    temp_artifact_dir,
)


@declared("twins")
def twins(data, min_ratings, n_pairs, n_hashes, method, target_similarity, bucket_cap, n_random, min_common,
          compare_exact, seed, spark_master, spark_conf):
    """`twins` entry point: "movie twins", the top pairs by Jaccard of rated-movie sets on the
    whole ratings set (exact by default, or MinHash LSH), validated by the Pearson correlation of
    their ratings against random pairs (``recsys.twins``).

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

    from recsys.data.movielens import load_movielens
    from recsys.mlops import plots
    from recsys.twins.find import TwinsConfig, find_twins, validate_twins

    with stage_run("twins"):
        config = TwinsConfig(min_ratings=min_ratings, n_pairs=n_pairs, n_hashes=n_hashes, method=method,
                             target_similarity=target_similarity, bucket_cap=bucket_cap,
                             n_random=n_random, min_common=min_common, compare_exact=compare_exact,
                             seed=seed)
        name_run(f"twins {'exact' if config.method == 'exact' else 'minhash ' + config.method} "
                 f"{config.n_pairs} pairs")
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
