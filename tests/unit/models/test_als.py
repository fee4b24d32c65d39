"""ALS: config validation, a checkerboard known answer, the Recommender contract, and the
serving model (what MLflow logs) predicting through pyfunc with the fallback, never NaN."""

from __future__ import annotations

import math

import pytest

from recsys.core import RecsysError
from recsys.core.constants import ALS_BLOCKS_CONF
from recsys.models import ALSConfig, ALSRecommender
from tests.support.contract import assert_recommender_contract

SCHEMA = "userId int, movieId int, rating double, timestamp long"


@pytest.mark.parametrize("kwargs, message", [
    ({"rank": 0}, "rank=0 must be an integer >= 1"),
    ({"rank": 2.5}, "rank=2.5 must be an integer >= 1"),
    ({"reg_param": -0.1}, "reg_param=-0.1 must be a finite number >= 0"),
    ({"reg_param": "abc"}, "reg_param=abc must be a number >= 0"),
    ({"max_iter": 0}, "max_iter=0 must be an integer >= 1"),
    ({"alpha": 0}, "alpha=0 must be a finite number > 0"),
    ({"implicit_prefs": "maybe"}, "implicit_prefs='maybe' must be true or false"),
    ({"seed": "x"}, "seed=x must be an integer"),
])
def test_config_errors_name_the_parameter(kwargs, message):
    with pytest.raises(RecsysError, match=message):
        ALSConfig(**kwargs)


def test_config_fields_are_the_params_and_strings_are_parsed():
    config = ALSConfig(rank="8", reg_param="0.05", max_iter="3", alpha="2", implicit_prefs="true",
                       nonnegative="false", seed="7")
    assert config.as_params() == {"rank": 8, "reg_param": 0.05, "max_iter": 3, "alpha": 2.0,
                                  "implicit_prefs": True, "nonnegative": False, "seed": 7,
                                  "biases": False}  # implicit mode has no ratings to offset
    assert set(config.as_params()) == set(ALSConfig.field_names())
    assert config.feedback == "implicit" and ALSConfig().feedback == "explicit"
    assert ALSConfig().biases is True and ALSConfig(biases="false").biases is False
    with pytest.raises(RecsysError, match="biases='sometimes' must be true or false"):
        ALSConfig(biases="sometimes")


def _additive(spark):
    """40 users x 25 movies, rating = 3 + user offset + movie offset (half steps, clipped), with
    every 7th (user, movie) pair held out: an additive structure a rank-1 ALS cannot represent."""
    train, held = [], []
    for user in range(1, 41):
        for movie in range(1, 26):
            value = min(5.0, max(0.5, round((3.0 + (user % 5 - 2) * 0.4 + (movie % 7 - 3) * 0.3) * 2) / 2))
            (held if (user * 25 + movie) % 7 == 0 else train).append((user, movie, value, 0))
    return spark.createDataFrame(train, SCHEMA), spark.createDataFrame(held, SCHEMA)


@pytest.mark.slow
def test_biases_are_folded_into_the_factors_exactly(spark):
    """With biases, prediction = mu + b_user + b_movie + (ALS on the baseline's residuals), and
    the folded rank + 2 model computes exactly that; on additive data it beats plain ALS."""
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import functions as F

    from recsys.evaluation import rating_metrics
    from recsys.models import BiasBaseline

    train, held = _additive(spark)
    model = ALSRecommender(rank=1, max_iter=5, reg_param=0.05, seed=3).fit(train)
    assert model.model.rank == 3
    baseline = BiasBaseline().fit(train)
    blocks = int(spark.conf.get(ALS_BLOCKS_CONF, "10"))  # the same blocking, so the same start
    residual = ALS(rank=1, maxIter=5, regParam=0.05, seed=3, userCol="userId", itemCol="movieId",
                   ratingCol="rating", numUserBlocks=blocks, numItemBlocks=blocks
                   ).fit(baseline.residuals(train))
    expected = (residual.setPredictionCol("_r").transform(held)
                .join(baseline.user_bias, "userId").join(baseline.item_bias, "movieId")
                .select("userId", "movieId", (F.lit(baseline.global_mean) + F.col("user_bias")
                                              + F.col("item_bias") + F.col("_r")).alias("_e")))
    got = model.predict(held).join(expected, ["userId", "movieId"]).collect()
    assert len(got) == held.count() > 100
    for row in got:
        assert row["prediction"] == pytest.approx(min(5.0, max(0.5, row["_e"])), abs=1e-4)

    plain = ALSRecommender(rank=1, max_iter=5, reg_param=0.05, seed=3, biases=False).fit(train)
    rmse = {name: rating_metrics(m.predict(held))["rmse"]
            for name, m in (("biased", model), ("plain", plain))}
    assert rmse["biased"] < 0.2 < rmse["plain"], rmse


@pytest.mark.slow
def test_a_given_baseline_serves_its_cached_residuals_to_every_fit(spark):
    """A search passes its bias baseline to every trial: the residuals are computed and cached
    once per training set, and the models equal those that fit their own baseline."""
    from recsys.models import BiasBaseline

    train, held = _additive(spark)
    baseline = BiasBaseline().fit(train)
    first = ALSRecommender(rank=1, max_iter=5, reg_param=0.05, seed=3, baseline=baseline).fit(train)
    cached = baseline.cached_residuals(train)
    assert cached.is_cached and cached.count() == train.count()
    second = ALSRecommender(rank=2, max_iter=5, reg_param=0.1, seed=3, baseline=baseline).fit(train)
    assert baseline.cached_residuals(train) is cached  # not recomputed for the second fit
    own = ALSRecommender(rank=1, max_iter=5, reg_param=0.05, seed=3).fit(train)
    got = first.predict(held).withColumnRenamed("prediction", "a").join(
        own.predict(held).withColumnRenamed("prediction", "b"), ["userId", "movieId"]).collect()
    assert len(got) == held.count()
    assert all(r["a"] == pytest.approx(r["b"], abs=1e-5) for r in got)
    assert second.model.rank == 4
    baseline.release()
    assert not cached.is_cached


def _checkerboard(spark, liked_only=False):
    """Users 1-12: even users like movies 1-6 (5.0) and dislike 7-12 (1.0), odd users the
    reverse; every user rated all 12 movies except user 2, who never rated movie 4 (liked by
    its group) nor 10 and 11 (disliked). User 2's best unseen movie is 4. ``liked_only``: the
    implicit-feedback version, where a rating is an interaction: only the liked movies."""
    rows = []
    for user in range(1, 13):
        for movie in range(1, 13):
            if user == 2 and movie in (4, 10, 11):
                continue
            liked = (movie <= 6) == (user % 2 == 0)
            if liked or not liked_only:
                rows.append((user, movie, 5.0 if liked else 1.0, 0))
    return spark.createDataFrame(rows, SCHEMA)


@pytest.mark.parametrize("implicit, biases, rank", [
    (False, True, 1), pytest.param(False, False, 2, marks=pytest.mark.slow), (True, False, 2)])
def test_checkerboard_withheld_item_ranks_first(spark, implicit, biases, rank):
    """Plain explicit ALS needs rank 2 (a mean and a like/dislike contrast); on top of the
    biases the residual of a checkerboard is the contrast alone, rank 1 (a rank-2 residual model
    is under-determined there: its second factor fits the damping's small leftovers)."""
    from recsys.evaluation import recommend

    train = _checkerboard(spark, liked_only=implicit)
    model = ALSRecommender(rank=rank, max_iter=5, reg_param=0.01, implicit_prefs=implicit, biases=biases,
                           seed=1).fit(train)
    assert model.predicts_ratings is (not implicit)
    recs = recommend(model, spark.createDataFrame([(2,)], "userId int"), train, k=3).collect()
    assert [r["movieId"] for r in sorted(recs, key=lambda r: r["rank"])][0] == 4
    assert len(recs) == 3 and not {r["movieId"] for r in recs} & {1, 2, 3, 5, 6}
    if not implicit:
        pred = {r["movieId"]: r["prediction"] for r in
                model.predict(spark.createDataFrame([(2, 4), (2, 10)], "userId int, movieId int")).collect()}
        assert pred[4] == pytest.approx(5.0, abs=0.5) and pred[10] == pytest.approx(1.0, abs=0.5)


@pytest.mark.slow
def test_contract(spark, synthetic_ratings, tmp_path):
    train = synthetic_ratings.filter("userId <= 40").cache()
    assert_recommender_contract(spark, lambda: ALSRecommender(rank=3, max_iter=3, seed=3), train,
                                tmp_dir=tmp_path)


def test_predict_is_null_for_cold_start_and_clipped(spark):
    train = _checkerboard(spark)
    model = ALSRecommender(rank=2, max_iter=3).fit(train)
    pairs = spark.createDataFrame([(1, 1), (99, 1), (1, 99)], "userId int, movieId int")
    got = {(r["userId"], r["movieId"]): r["prediction"] for r in model.predict(pairs).collect()}
    assert got[(99, 1)] is None and got[(1, 99)] is None
    assert 0.5 <= got[(1, 1)] <= 5.0


@pytest.mark.parametrize("biases", [True, False])
def test_served_explicit_model_answers_the_baseline_from_its_one_als_stage(spark, tmp_path, biases):
    """One ALS stage serves both the model and the bias baseline (sentinel rows; no lookup
    stages): known pairs score as predict, a cold user or movie gets mu + the other's offset, both
    cold get mu, all clipped, rows in input order; the recommender comes back without sentinels."""
    from pyspark.ml import PipelineModel
    from pyspark.ml.recommendation import ALSModel
    from pyspark.sql import functions as F

    from recsys.models import SENTINEL_ID, BiasBaseline

    train = _checkerboard(spark)
    fallback = BiasBaseline().fit(train)
    model = ALSRecommender(rank=2, max_iter=3, seed=1, biases=biases, baseline=fallback).fit(train)
    model.write_serving_model(str(tmp_path / "served"), fallback)
    served = PipelineModel.load(str(tmp_path / "served"))
    assert [type(s).__name__ for s in served.stages] == ["SQLTransformer", "ALSModel", "SQLTransformer"]
    users, movies = [2, 99, 1, 3, 98, 5, 0], [4, 1, 77, 2, 76, 7, 3]
    query = spark.createDataFrame(list(zip(users, movies, strict=True)), "userId long, movieId long")
    got = [r["prediction"] for r in served.transform(query).collect()]
    own = {(r["userId"], r["movieId"]): r["prediction"] for r in model.predict(query).collect()}
    mu = fallback.global_mean
    b_u = dict(fallback.user_bias.select("userId", "user_bias").collect())
    b_i = dict(fallback.item_bias.select("movieId", "item_bias").collect())
    for user, movie, value in zip(users, movies, got, strict=True):
        expected = own[(user, movie)]
        if expected is None:
            expected = min(max(mu + b_u.get(user, 0.0) + b_i.get(movie, 0.0), 0.5), 5.0)
        assert value == pytest.approx(expected, abs=1e-5), (user, movie)
    assert got[4] == pytest.approx(mu, abs=1e-12)  # both unknown: the global mean itself
    again = ALSRecommender.from_serving_model(served, model.config)
    user_ids = {r["id"] for r in again.model.userFactors.collect()}
    assert SENTINEL_ID not in user_ids and user_ids == set(range(1, 13))
    assert again.model.itemFactors.where(F.col("id") == SENTINEL_ID).count() == 0
    known = spark.createDataFrame([(u, m) for u in (1, 2) for m in (1, 4, 9)], "userId int, movieId int")
    before = {(r["userId"], r["movieId"]): r["prediction"] for r in model.predict(known).collect()}
    after = {(r["userId"], r["movieId"]): r["prediction"] for r in again.predict(known).collect()}
    assert after == before  # the appended factors (biases=False) add exactly 0
    assert isinstance(served.stages[1], ALSModel)


@pytest.mark.slow
def test_serving_model_through_pyfunc(spark, tmp_path):
    """The logged form: pyfunc predicts ALS where it can and the bias baseline elsewhere, in input
    order, never NaN; implicit mode fills 0.0. Saved and loaded like MLflow serves it."""
    import mlflow
    import pandas as pd

    from recsys.mlops import save_als_model
    from recsys.models import BiasBaseline

    train = _checkerboard(spark)
    fallback = BiasBaseline().fit(train)
    model = ALSRecommender(rank=2, max_iter=3, seed=1).fit(train)
    path = str(tmp_path / "served")
    save_als_model(model, fallback, path)  # the files log_als_model logs
    served = mlflow.pyfunc.load_model(path)

    query = pd.DataFrame({"userId": [2, 99, 1, 3, 98, 5], "movieId": [4, 1, 77, 2, 76, 7]})
    got = list(served.predict(query))
    assert len(got) == 6 and not any(math.isnan(v) for v in got)
    pairs = spark.createDataFrame(query.astype("int32"))
    own = {(r["userId"], r["movieId"]): r["prediction"] for r in model.predict(pairs).collect()}
    base = {(r["userId"], r["movieId"]): r["prediction"] for r in fallback.predict(pairs).collect()}
    for (user, movie), value in zip(zip(query["userId"], query["movieId"], strict=True), got, strict=True):
        expected = own[(user, movie)] if own[(user, movie)] is not None else base[(user, movie)]
        assert value == pytest.approx(expected, abs=1e-5), (user, movie)
    # unknown user and movie: exactly the global mean (clipped), as the evaluation scores it
    assert got[4] == pytest.approx(fallback.global_mean, abs=1e-6)

    implicit = ALSRecommender(rank=2, max_iter=3, implicit_prefs=True).fit(train)
    ipath = str(tmp_path / "served-implicit")
    save_als_model(implicit, None, ipath)
    scores = list(mlflow.pyfunc.load_model(ipath).predict(query))
    assert scores[1] == 0.0 and scores[4] == 0.0  # unknown user / movie: no evidence of preference
    known = {(r["userId"], r["movieId"]): r["prediction"] for r in implicit.predict(pairs).collect()}
    assert scores[0] == pytest.approx(known[(2, 4)], abs=1e-6) and scores[0] != 0.0

    # the recommender is recovered from the served pipeline (used for the test evaluation)
    again = ALSRecommender.from_serving_model(mlflow.spark.load_model(path), model.config)
    assert again.predict(pairs).count() == 6
