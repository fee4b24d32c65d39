"""`recommend` entry point: top-K lists for every user from a registered recommender."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time

from recsys import __version__
from recsys.core.constants import (
    DEFAULT_RELEVANCE_THRESHOLD,
    ITEM_COL,
    RANK_COL,
    SCORE_COL,
    TAG_RECOMMENDATIONS_REUSED,
    USER_COL,
)
from recsys.entry_points import BUNDLED, declared
from recsys.jobs.common import (
    data_source,
    model_split,
)
from recsys.mlops.registry import download_recommender, resolve_recommender
from recsys.mlops.tracking import (
    loaded_spark_model,
    log_new_params,
    name_run,
    say,
    spark_session,
    stage_run,
    temp_artifact_dir,
)


@declared("recommend")
def recommend(model_uri, users, output, k, split_dir, data, spark_master, spark_conf):
    """`recommend` entry point: top-``k`` unseen movies for every user (or those in ``users``).

    ``model_uri``: see :func:`resolve_recommender`. ``users``: "" (every user the model has
    factors for) or a file/URI of user ids (:func:`recsys.recommend.batch.read_users`); users the model
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

    from recsys.core.errors import RecsysError
    from recsys.evaluation.protocol import check_eval_params
    from recsys.models.als import ALSConfig, ALSRecommender
    from recsys.models.popularity import PopularityRecommender
    from recsys.recommend.batch import (
        read_lists_manifest,
        read_users,
        recommend_all,
        update_lists_manifest,
        write_lists,
    )

    # the model files stay until the job ends: Spark reads the factor tables lazily
    with stage_run("recommend"), tempfile.TemporaryDirectory(prefix="recsys-model-") as tmp, \
            contextlib.ExitStack() as models:
        k, _ = check_eval_params(k, DEFAULT_RELEVANCE_THRESHOLD)
        name_run(f"recommend {model_uri} k={k}")
        users = (users or "").strip()
        client = mlflow.MlflowClient()
        download_uri, info = resolve_recommender(client, model_uri)
        log_new_params({"model_uri": model_uri, **info, "k": k, "users": users, "output": output,
                        "data": data or BUNDLED})
        spark = spark_session(spark_master, spark_conf)
        spark_dir, meta = download_recommender(download_uri, model_uri, tmp)
        pipeline_model = models.enter_context(loaded_spark_model(spark, spark_dir))
        user_factors, item_factors = ALSRecommender.from_serving_model(pipeline_model, ALSConfig()).factors()
        chosen_split, loaded = model_split(spark, data, split_dir, meta)
        log_new_params({"split_dir": chosen_split, "model_kind": meta["kind"]})
        key = {**info, "k": k, "users": users, "split_digest": meta["split_digest"]}

        manifest = read_lists_manifest(spark, output)
        if manifest is not None:
            if manifest.get("key") != key:
                raise RecsysError(f"output {output} holds recommendations made with {manifest.get('key')}, "
                                  f"not {key}; delete it or choose another output")
            say(f"[recommend] {output} already holds these recommendations: reused")
            mlflow.set_tag(TAG_RECOMMENDATIONS_REUSED, "true")
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
            manifest = {"key": key, "model_uri": model_uri, "counts": counts, "split_dir": chosen_split,
                        "columns": [USER_COL, RANK_COL, ITEM_COL, SCORE_COL], "version": __version__}
            write_lists(spark, recs, output, manifest, progress=say)
            recs.unpersist()
            counts["write_seconds"] = manifest["counts"]["write_seconds"] = time.time() - start
            update_lists_manifest(spark, output, manifest)
        mlflow.log_metrics({name: float(value) for name, value in manifest["counts"].items()})
        _log_recommendation_sample(spark, output, data, loaded.manifest)
        return manifest


def _log_recommendation_sample(spark, output: str, data, split_manifest: dict) -> None:
    """Log ``sample.csv``: the first users' lists (:func:`list_sample`), with titles from
    ``data``, else the split's source (left empty when that cannot be read)."""
    import mlflow

    from recsys.data.movielens import load_movielens
    from recsys.recommend.batch import list_sample

    movies = None
    try:
        source = data_source(data) or split_manifest.get("source")
        if not source:  # never the bundled titles for another data set's ids
            raise ValueError("the split's manifest names no source")
        movies = load_movielens(spark, source, progress=say).movies
    except Exception as err:  # titles are a convenience: never fail the job for them
        say(f"[recommend] no titles in sample.csv ({type(err).__name__}: {err})")
    table = list_sample(spark, output, movies)
    with temp_artifact_dir() as tmp:
        table.to_csv(os.path.join(tmp, "sample.csv"), index=False)
        mlflow.log_artifact(os.path.join(tmp, "sample.csv"))
