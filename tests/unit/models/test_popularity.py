"""Popularity recommenders: config validation, known orders, the shared contract."""

from __future__ import annotations

import pytest

from recsys.core import RecsysError
from recsys.models import PopularityConfig, PopularityRecommender
from tests.support.contract import assert_recommender_contract

RATINGS = "userId int, movieId int, rating double"


def _crafted(spark):
    """Movie 1: one 5.0; movie 2: twenty 4.5; movie 3: ten 4.0; movie 4: five 2.0."""
    rows = [(100, 1, 5.0)]
    rows += [(u, 2, 4.5) for u in range(1, 21)]
    rows += [(u, 3, 4.0) for u in range(1, 11)]
    rows += [(u, 4, 2.0) for u in range(1, 6)]
    return spark.createDataFrame(rows, RATINGS)


def test_config_validation_names_the_parameter():
    assert PopularityConfig().as_params() == {"kind": "count", "damping": 10.0}
    with pytest.raises(RecsysError, match="kind='top'.*count, damped_mean"):
        PopularityConfig(kind="top")
    with pytest.raises(RecsysError, match="damping=-1"):
        PopularityConfig(kind="damped_mean", damping=-1)
    with pytest.raises(RecsysError, match="damping=x must be a number >= 0"):
        PopularityConfig(damping="x")
    assert PopularityConfig(damping="2.5").damping == 2.5


def test_damped_mean_order_single_five_does_not_top(spark):
    train = _crafted(spark)
    mu = (5.0 + 20 * 4.5 + 10 * 4.0 + 5 * 2.0) / 36
    beta = 10.0
    expected = {1: (5.0 + beta * mu) / 11, 2: (90 + beta * mu) / 30,
                3: (40 + beta * mu) / 20, 4: (10 + beta * mu) / 15}
    model = PopularityRecommender(kind="damped_mean", damping=beta).fit(train)
    assert model.predicts_ratings
    ranked = [(r.movieId, r.score, r.rank) for r in model.ranking(10).orderBy("rank").collect()]
    assert [m for m, _, _ in ranked] == [2, 1, 3, 4]
    assert {m: s for m, s, _ in ranked} == pytest.approx(expected)
    # without damping the single 5.0 would win: the damping is what keeps it down
    raw = PopularityRecommender(kind="damped_mean", damping=0.0).fit(train)
    assert [r.movieId for r in raw.ranking(2).orderBy("rank").collect()] == [1, 2]

    # predicts its damped mean; unknown movie -> null (the evaluation's fallback takes it)
    pairs = spark.createDataFrame([(7, 3), (7, 99)], "userId int, movieId int")
    got = {r.movieId: r.prediction for r in model.predict(pairs).collect()}
    assert got[3] == pytest.approx(expected[3]) and got[99] is None


def test_count_order_and_no_rating_predictions(spark):
    model = PopularityRecommender(kind="count").fit(_crafted(spark))
    assert not model.predicts_ratings
    assert [(r.movieId, r.score) for r in model.ranking(3).orderBy("rank").collect()] == [
        (2, 20.0), (3, 10.0), (4, 5.0)]
    pairs = spark.createDataFrame([(7, 3)], "userId int, movieId int")
    assert model.predict(pairs).first().prediction is None


@pytest.mark.parametrize("kind", ["count", pytest.param("damped_mean", marks=pytest.mark.slow)])
def test_contract(spark, synthetic_ratings, tmp_path, kind):
    train = synthetic_ratings.filter("userId <= 40 and movieId <= 60")
    assert_recommender_contract(spark, lambda: PopularityRecommender(kind=kind, damping=3.0), train,
                                k=5, tmp_dir=tmp_path)
