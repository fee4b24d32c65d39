"""`main` entry point: every stage in order, each a nested run under one parent run."""

from __future__ import annotations

from recsys.core import fs
from recsys.entry_points import BUNDLED, declared
from recsys.jobs.als_search import als_search
from recsys.jobs.baseline import baseline
from recsys.jobs.promote import promote
from recsys.jobs.recommend import recommend
from recsys.jobs.split import split
from recsys.jobs.twins import twins
from recsys.mlops.tracking import (
    log_new_params,
    say,
    stage_run,
)


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
        version = f"{ranking['model_name']}-v{ranking['version']}"
        output = fs.join(fs.parent(split_dir), "recommendations", version)
        out["recommend"] = recommend(model_uri=model_uri, output=output, split_dir=split_dir, data=data,
                                     **spark)
        out["twins"] = twins(data=data, **spark)
    return out
