"""The evaluation protocol against hand-computed answers."""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import pytest

from recsys.core import RecsysError
from recsys.core.constants import (
    COVERAGE,
    MAE,
    MAP,
    N_USERS,
    N_USERS_NO_RELEVANT,
    NDCG,
    PRECISION,
    RECALL,
    RMSE,
)
from recsys.evaluation import (
    HeldOut,
    evaluate,
    ranking_metrics,
    rating_metrics,
    recommend,
)
from recsys.models import BiasBaseline, PopularityRecommender

RATINGS = "userId int, movieId int, rating double"


def _ratings(spark, rows):
    return spark.createDataFrame(rows, RATINGS)


# ---------------------------------------------------------------- ranking metrics


def test_ranking_metrics_hand_computed(spark):
    k = 3
    recs = spark.createDataFrame(
        [(1, 10, 0.9, 1), (1, 20, 0.8, 2), (1, 30, 0.7, 3),
         (1, 40, 0.6, 4),  # rank > k: must be ignored although relevant
         (2, 20, 0.5, 1)],  # fewer than k recommendations
        "userId int, movieId int, score double, rank int")
    heldout = _ratings(spark, [
        (1, 10, 5.0), (1, 30, 4.0), (1, 40, 4.5), (1, 50, 2.0),  # relevant {10, 30, 40}
        (2, 20, 4.0), (2, 60, 5.0),                              # relevant {20, 60}
        (3, 10, 3.0),                                            # nothing relevant: excluded
        (4, 70, 4.0),                                            # relevant, no recommendation
    ])
    m = ranking_metrics(recs, heldout, k=k, threshold=4.0)
    assert m[N_USERS] == 3 and m[N_USERS_NO_RELEVANT] == 1

    ln = math.log
    p = [2 / 3, 1 / 3, 0.0]  # user 2: one hit divided by k, not by the 1 recommendation
    r = [2 / 3, 1 / 2, 0.0]
    ndcg = [(1 / ln(2) + 1 / ln(4)) / (1 / ln(2) + 1 / ln(3) + 1 / ln(4)),
            (1 / ln(2)) / (1 / ln(2) + 1 / ln(3)), 0.0]
    ap = [(1 / 1 + 2 / 3) / 3, (1 / 1) / 2, 0.0]
    assert m[PRECISION] == pytest.approx(sum(p) / 3, abs=1e-9)
    assert m[RECALL] == pytest.approx(sum(r) / 3, abs=1e-9)
    assert m[NDCG] == pytest.approx(sum(ndcg) / 3, abs=1e-9)
    assert m[MAP] == pytest.approx(sum(ap) / 3, abs=1e-9)


def test_ranking_metrics_perfect_list_and_bad_params(spark):
    recs = spark.createDataFrame([(1, 5, 1.0, 1), (1, 6, 0.5, 2)],
                                 "userId int, movieId int, score double, rank int")
    heldout = _ratings(spark, [(1, 5, 4.0), (1, 6, 5.0)])
    m = ranking_metrics(recs, heldout, k=2, threshold=4.0)
    assert (m[PRECISION], m[RECALL], m[NDCG], m[MAP]) == pytest.approx((1.0, 1.0, 1.0, 1.0))
    with pytest.raises(RecsysError, match="k=0"):
        ranking_metrics(recs, heldout, k=0)
    with pytest.raises(RecsysError, match="relevance_threshold"):
        ranking_metrics(recs, heldout, k=2, threshold=7)


def test_ranking_metrics_equal_spark_ranking_evaluator(spark):
    """Random lists and relevant sets (users with an empty set left out, as here): our single
    aggregation gives Spark's RankingEvaluator numbers."""
    import random

    from pyspark.ml.evaluation import RankingEvaluator

    rng = random.Random(11)
    k, recs, held, lists = 5, [], [], []
    for user in range(1, 41):
        pred = rng.sample(range(1, 30), rng.randint(0, 7))  # 0..7 long: some shorter than k, some cut
        rel = set(rng.sample(range(1, 30), rng.randint(1, 9)))
        recs += [(user, m, 1.0, rank) for rank, m in enumerate(pred, 1)]
        held += [(user, m, 4.5 if m in rel else 2.0) for m in set(rng.sample(range(1, 30), 6)) | rel]
        lists.append(([float(m) for m in pred[:k]], [float(m) for m in rel]))
    m = ranking_metrics(spark.createDataFrame(recs, "userId int, movieId int, score double, rank int"),
                        _ratings(spark, held), k=k, threshold=4.0)
    data = spark.createDataFrame(lists, "prediction array<double>, label array<double>")
    assert m[N_USERS] == 40
    for key, name in ((PRECISION, "precisionAtK"), (RECALL, "recallAtK"), (NDCG, "ndcgAtK"),
                      (MAP, "meanAveragePrecisionAtK")):
        expected = RankingEvaluator(metricName=name, k=k).evaluate(data)
        assert m[key] == pytest.approx(expected, abs=1e-12), key


def test_ranking_metrics_no_evaluated_user_is_nan(spark):
    recs = spark.createDataFrame([(1, 5, 1.0, 1)], "userId int, movieId int, score double, rank int")
    m = ranking_metrics(recs, _ratings(spark, [(1, 5, 1.0), (2, 6, 2.0)]), k=3, threshold=4.0)
    assert m[N_USERS] == 0 and m[N_USERS_NO_RELEVANT] == 2
    assert all(math.isnan(m[key]) for key in (PRECISION, RECALL, NDCG, MAP))


# ---------------------------------------------------------------- rating metrics and bias


def test_rating_metrics(spark):
    same = spark.createDataFrame([(4.0, 4.0), (3.5, 3.5), (1.0, 1.0)], "rating double, prediction double")
    assert rating_metrics(same) == {RMSE: 0.0, MAE: 0.0}
    df = spark.createDataFrame([(4.0, 3.5), (3.0, 3.0), (5.0, 4.0)], "rating double, prediction double")
    m = rating_metrics(df)
    assert m[RMSE] == pytest.approx(math.sqrt((0.25 + 0 + 1) / 3))
    assert m[MAE] == pytest.approx(0.5)
    cov = spark.createDataFrame([(4.0, 3.5, True), (3.0, 3.0, False), (5.0, 4.0, True), (2.0, 2.0, True)],
                                "rating double, prediction double, own boolean")
    m = rating_metrics(cov, covered_col="own")
    assert m == pytest.approx({RMSE: math.sqrt(1.25 / 4), MAE: 1.5 / 4, COVERAGE: 0.75})
    with pytest.raises(RecsysError, match="null prediction"):
        rating_metrics(spark.createDataFrame([(4.0, None)], "rating double, prediction double"))


# train: mu = 4; damping 1: b_m1 = 1/3, b_m2 = -1/2, b_u1 = (2/3 - 1/2)/3 = 1/18, b_u2 = -1/6
TRAIN = [(1, 1, 5.0), (1, 2, 3.0), (2, 1, 4.0)]


def test_bias_baseline_hand_computed_and_roundtrip(spark, tmp_path):
    bias = BiasBaseline(damping=1.0).fit(_ratings(spark, TRAIN))
    assert bias.global_mean == pytest.approx(4.0)
    pairs = spark.createDataFrame([(1, 1, "a"), (2, 2, "b"), (3, 9, "c"), (2, 9, "d")],
                                  "userId int, movieId int, tag string")
    expected = {"a": 4 + 1 / 18 + 1 / 3, "b": 4 - 1 / 6 - 1 / 2, "c": 4.0, "d": 4 - 1 / 6}
    got = {r["tag"]: r["prediction"] for r in bias.predict(pairs).collect()}
    assert got == pytest.approx(expected)

    bias.save(str(tmp_path / "bias"))
    loaded = BiasBaseline.load(spark, str(tmp_path / "bias"))
    assert {r["tag"]: r["prediction"] for r in loaded.predict(pairs).collect()} == pytest.approx(expected)
    with pytest.raises(RecsysError, match="already exists"):
        bias.save(str(tmp_path / "bias"))
    with pytest.raises(RecsysError, match="damping"):
        BiasBaseline(damping=-1)


# ---------------------------------------------------------------- evaluate


def test_evaluate_cold_start_fallback_and_coverage(spark):
    train = _ratings(spark, TRAIN)
    # damped means (beta 1, mu 4): m1 = 13/3, m2 = 7/2; movie 9 is unknown -> bias fallback
    model = PopularityRecommender(kind="damped_mean", damping=1.0).fit(train)
    heldout = _ratings(spark, [(2, 2, 3.0), (2, 9, 4.0), (3, 1, 5.0)])
    m = evaluate(model, train, heldout, k=2, fallback=BiasBaseline(damping=1.0).fit(train))
    errors = [3.5 - 3.0, (4 - 1 / 6) - 4.0, 13 / 3 - 5.0]
    assert m[COVERAGE] == pytest.approx(2 / 3)
    assert m[RMSE] == pytest.approx(math.sqrt(sum(e * e for e in errors) / 3))
    assert m[MAE] == pytest.approx(sum(abs(e) for e in errors) / 3)
    # user 2: only movie 2 unseen, not relevant -> 0; user 3: [1, 2], hit at rank 1
    assert m[N_USERS] == 2 and m[N_USERS_NO_RELEVANT] == 0
    assert m[PRECISION] == pytest.approx((0 + 1 / 2) / 2)
    assert m[RECALL] == pytest.approx((0 + 1) / 2)


def test_held_out_judges_many_models_as_evaluate_does(spark):
    train = _ratings(spark, TRAIN)
    heldout = _ratings(spark, [(2, 2, 3.0), (2, 9, 4.0), (3, 1, 5.0), (3, 2, 4.5)])
    fallback = BiasBaseline(damping=1.0).fit(train)
    held = HeldOut(train, heldout, k=2, fallback=fallback).prepare()
    try:
        for model in (PopularityRecommender(kind="damped_mean", damping=1.0).fit(train),
                      PopularityRecommender(kind="count").fit(train)):
            once = evaluate(model, train, heldout, k=2, fallback=fallback)
            assert held.evaluate(model) == pytest.approx(once, nan_ok=True)
    finally:
        held.release()
    assert fallback.user_bias.is_cached  # the caller's fallback is not released


def test_evaluate_count_model_has_no_rating_metrics(spark):
    train = _ratings(spark, TRAIN)
    m = evaluate(PopularityRecommender(kind="count").fit(train), train,
                 _ratings(spark, [(2, 2, 5.0)]), k=1)
    assert RMSE not in m and COVERAGE not in m
    assert m[PRECISION] == 1.0 and m[N_USERS] == 1


# ---------------------------------------------------------------- recommend


class _Spy(PopularityRecommender):
    calls: list

    def top_n(self, users, n):
        self.calls.append(("top_n", n))
        return super().top_n(users, n)

    def score_all(self, users):
        self.calls.append(("score_all", users.count()))
        return super().score_all(users)


def _expected_topk(rows, k):
    counts = Counter(m for _, m, _ in rows)
    order = sorted(counts, key=lambda m: (-counts[m], m))
    seen = defaultdict(set)
    for u, m, _ in rows:
        seen[u].add(m)
    return {u: [m for m in order if m not in s][:k] for u, s in seen.items()}


@pytest.mark.parametrize("max_slack", [pytest.param(4096, marks=pytest.mark.slow), 16])
def test_recommend_excludes_seen_light_and_heavy_users(spark, synthetic_ratings, max_slack):
    train = synthetic_ratings.select("userId", "movieId", "rating")
    rows = [tuple(r) for r in train.collect()]
    model = _Spy(kind="count").fit(train)
    model.calls = []
    k = 7
    recs = recommend(model, train.select("userId"), train, k, max_slack=max_slack)
    got = defaultdict(list)
    for r in recs.orderBy("userId", "rank").collect():
        got[r.userId].append(r.movieId)
    assert dict(got) == _expected_topk(rows, k)
    n_heavy = sum(1 for c in Counter(u for u, _, _ in rows).values() if c > 16)
    if max_slack == 16:  # every user with more than 16 ratings goes through score_all
        assert ("score_all", n_heavy) in model.calls and n_heavy > 0
        assert {n for name, n in model.calls if name == "top_n"} == {k + 16}
    else:
        assert not [c for c in model.calls if c[0] == "score_all"]
        assert {n for _, n in model.calls} == {k + 16, k + 32, k + 64}


def test_recommend_ties_and_fewer_than_k(spark):
    # movies 1..3 each rated twice (a three-way tie), movie 4 once
    train = _ratings(spark, [(1, 3, 4.0), (2, 3, 4.0), (1, 2, 4.0), (3, 2, 4.0),
                             (2, 1, 4.0), (3, 1, 4.0), (4, 4, 1.0)])
    model = PopularityRecommender(kind="count").fit(train)
    users = spark.createDataFrame([(1,), (4,), (9,)], "userId int")
    got = defaultdict(list)
    for r in recommend(model, users, train, 10).orderBy("userId", "rank").collect():
        got[r.userId].append((r.rank, r.movieId, r.score))
    assert got[1] == [(1, 1, 2.0), (2, 4, 1.0)]  # saw 2 and 3; only two left (< k)
    assert got[4] == [(1, 1, 2.0), (2, 2, 2.0), (3, 3, 2.0)]  # tie broken by movieId
    assert [m for _, m, _ in got[9]] == [1, 2, 3, 4]  # unknown user: everything
