"""Blocked top-K unseen (recsys.topk) against brute force, and against the slack-tier route."""

from __future__ import annotations

import random

import numpy as np
import pytest

from recsys.evaluation import recommend, seen_blocks, top_k_unseen, user_blocks

FACTORS = "id int, features array<float>"


def _brute(users, items, seen, k):
    """{user: [(movie, score)]}: float64 dot products, seen removed, score desc then id asc."""
    out = {}
    for u, fu in users.items():
        scored = [(-float(np.dot(np.float64(fu), np.float64(fi))), m) for m, fi in items.items()
                  if (u, m) not in seen]
        out[u] = [(m, -s) for s, m in sorted(scored)[:k]]
    return out


# one block pair (full suite); many, uneven
@pytest.mark.parametrize("blocks", [pytest.param((4096, 16384), marks=pytest.mark.slow), (3, 4)])
def test_top_k_unseen_matches_brute_force(spark, blocks):
    rng = random.Random(3)
    # small integer factors: many exact ties, so the movieId tie-break is exercised
    users = {u: [float(rng.randint(-2, 2)) for _ in range(3)] for u in range(1, 12)}
    items = {m: [float(rng.randint(-2, 2)) for _ in range(3)] for m in range(100, 117)}
    seen = {(u, m) for u in users for m in items if rng.random() < 0.3}
    seen |= {(1, m) for m in items if m != 105}  # user 1: a single unseen movie (< k)
    seen.add((99, 100))  # a seen pair of a user without factors: ignored
    uf = spark.createDataFrame(list(users.items()), FACTORS)
    itf = spark.createDataFrame(list(items.items()), FACTORS)
    seen_df = spark.createDataFrame(sorted(seen), "userId int, movieId int")
    wanted = spark.createDataFrame([(u,) for u in (1, 2, 3, 5, 8, 11, 42)], "userId int")  # 42: no factors
    k = 4
    got = {}
    for r in top_k_unseen(uf, itf, seen_df, k, users=wanted, user_block=blocks[0],
                          item_block=blocks[1]).collect():
        got.setdefault(r.userId, []).append((r.rank, r.movieId, r.score))
    expected = _brute({u: users[u] for u in (1, 2, 3, 5, 8, 11)}, items, seen, k)
    assert set(got) == set(expected)
    for u, rows in got.items():
        rows.sort()
        assert [rank for rank, _, _ in rows] == list(range(1, len(rows) + 1))
        assert [(m, s) for _, m, s in rows] == expected[u]
    assert len(got[1]) == 1 and got[1][0][1] == 105

    # a search's cache of grouped seen pairs (recsys.evaluation.HeldOut): same answer from it,
    # and an entry for another user block count is never used
    n_ub = user_blocks(6, blocks[0])
    nothing = seen_df.limit(0)  # seen pairs the call below would use if it ignored the cache
    cache = {n_ub: seen_blocks(seen_df, wanted, n_ub), n_ub + 1: seen_blocks(nothing, wanted, n_ub + 1)}
    again = top_k_unseen(uf, itf, nothing, k, users=wanted, user_block=blocks[0],
                         item_block=blocks[1], blocks=cache).collect()
    assert sorted((r.userId, r.rank, r.movieId, r.score) for r in again) == sorted(
        (u, rank, m, s) for u, rows in got.items() for rank, m, s in rows)


class _NoFactors:
    """Hides an ALS recommender's factors so `recommend` takes the slack-tier route."""

    def __init__(self, inner):
        self._inner = inner

    def top_n(self, users, n):
        return self._inner.top_n(users, n)

    def score_all(self, users):
        return self._inner.score_all(users)


@pytest.mark.slow
def test_recommend_factor_route_equals_slack_route(spark, synthetic_ratings):
    from recsys.models import ALSRecommender

    train = synthetic_ratings.select("userId", "movieId", "rating")
    model = ALSRecommender(rank=4, max_iter=3, reg_param=0.1, seed=1).fit(train)
    users = train.select("userId").distinct()
    fast = recommend(model, users, train, 5).collect()
    slow = recommend(_NoFactors(model), users, train, 5).collect()
    assert len(fast) == 300 * 5
    key = {(r.userId, r.rank): r.movieId for r in slow}
    assert {(r.userId, r.rank): r.movieId for r in fast} == key
    slow_score = {(r.userId, r.movieId): r.score for r in slow}
    assert max(abs(r.score - slow_score[(r.userId, r.movieId)]) for r in fast) < 1e-5  # float32 vs 64
