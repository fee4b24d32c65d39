"""Movie twins: banding arithmetic, exact Jaccard ordering, bucket splitting, Pearson validation."""

from __future__ import annotations

import math
import random
from itertools import combinations

import pytest

from recsys.core import RecsysError
from recsys.twins import (
    TwinsConfig,
    banded_candidates,
    candidate_probability,
    choose_bands,
    compare_groups,
    find_twins,
    movie_sets,
    pair_pearson,
    pearson_from_sums,
    signatures,
    summarize,
    user_sets,
)

# ---------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("min_ratings", 0, "min_ratings=0 must be an integer >= 1"),
    ("n_pairs", 10_001, "n_pairs=10001 must be an integer in 1..10000"),
    ("n_hashes", "many", "n_hashes=many must be an integer in 1..1024"),
    ("n_hashes", 2.5, "n_hashes=2.5 must be an integer"),
    ("method", "brute", "method='brute' is unknown; allowed: banded, approx_join, exact"),
    ("target_similarity", 1.0, "target_similarity=1.0 must be a finite number in (0, 1)"),
    ("target_similarity", "x", "target_similarity=x must be a number in (0, 1)"),
    ("bucket_cap", 1, "bucket_cap=1 must be an integer >= 2"),
    ("n_random", -1, "n_random=-1 must be an integer in 0..10000"),
    ("min_common", 1, "min_common=1 must be an integer >= 2"),
    ("compare_exact", "maybe", "compare_exact='maybe' must be true or false"),
])
def test_config_rejects_bad_values_naming_the_parameter(field, value, needle):
    with pytest.raises(RecsysError) as err:
        TwinsConfig(**{field: value})
    assert needle in str(err.value)


def test_config_converts_strings_and_logs_every_field():
    config = TwinsConfig(min_ratings="5", n_pairs="7", target_similarity="0.6", compare_exact="true")
    got = (config.min_ratings, config.n_pairs, config.target_similarity, config.compare_exact)
    assert got == (5, 7, 0.6, True)
    params = config.as_params()
    assert set(params) == {"min_ratings", "n_pairs", "n_hashes", "method", "target_similarity", "bucket_cap",
                           "n_random", "min_common", "compare_exact", "seed"}
    assert params["compare_exact"] == "true"


def test_choose_bands_takes_the_most_rows_that_still_catch_the_target():
    bands, rows = choose_bands(128, 0.5)
    assert (bands, rows) == (42, 3)
    assert candidate_probability(0.5, 42, 3) == pytest.approx(1 - (1 - 0.125) ** 42)
    assert candidate_probability(0.5, 42, 3) >= 0.99 > candidate_probability(0.5, 128 // 4, 4)
    assert choose_bands(128, 0.9) == (12, 10)
    assert candidate_probability(0.9, 12, 10) >= 0.99 > candidate_probability(0.9, 11, 11)
    assert choose_bands(4, 0.05) == (4, 1)  # nothing reaches 0.99: every hash is its own band


def test_min_agreement_keeps_four_standard_deviations_below_the_floor():
    from recsys.twins import min_agreement

    # floor 0.5 of 128 hashes: sd sqrt(0.25 / 128) = 0.0442, 4 sd = 0.1768 -> 128 * 0.3232 = 41.4
    assert min_agreement(0.5, 128) == 41
    assert min_agreement(0.0, 128) == 0 and min_agreement(0.05, 16) == 0
    assert min_agreement(0.9, 1024) < 0.9 * 1024


def test_pearson_from_sums_matches_a_hand_computed_case():
    x, y = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 5.0, 4.0]
    sums = (4, sum(x), sum(y), sum(v * v for v in x), sum(v * v for v in y),
            sum(a * b for a, b in zip(x, y, strict=True)))
    # deviations (-1.5, -.5, .5, 1.5) and (-1.75, .25, 1.25, .25): 3.5 / sqrt(5 * 4.75)
    assert pearson_from_sums(*sums) == pytest.approx(3.5 / math.sqrt(23.75))
    assert pearson_from_sums(*sums, min_common=5) is None
    assert pearson_from_sums(3, 9.0, 6.0, 27.0, 14.0, 18.0) is None  # x constant at 3: zero variance


def test_summarize_counts_undefined_and_never_averages_them():
    s = summarize([0.5, None, -0.1, None, 0.2], seed=1)
    assert (s["count"], s["defined"], s["undefined"]) == (5, 3, 2)
    assert s["mean"] == pytest.approx(0.2)
    assert s["median"] == pytest.approx(0.2)
    assert s["std"] == pytest.approx(0.3)
    assert -0.1 - 1e-9 <= s["ci_low"] < s["mean"] < s["ci_high"] <= 0.5 + 1e-9
    empty = summarize([None, None])
    assert (empty["defined"], empty["undefined"], empty["mean"]) == (0, 2, None)


def test_permutation_test_separates_different_groups_only():
    rng = random.Random(3)
    high = [0.6 + rng.uniform(-0.1, 0.1) for _ in range(40)]
    low = [rng.uniform(-0.2, 0.2) for _ in range(40)]
    split = compare_groups(high, low + [None], seed=5, n_boot=2000, n_perm=2000)
    assert split["difference"] == pytest.approx(sum(high) / 40 - sum(low) / 40)
    assert split["p_value"] == pytest.approx(1 / 2001)
    assert split["diff_ci_low"] > 0.4
    same = compare_groups(low[:20], low[20:], seed=5, n_boot=2000, n_perm=2000)
    assert same["p_value"] > 0.05
    assert compare_groups([None], low)["p_value"] is None


# ---------------------------------------------------------------- Spark: twins on crafted data

IDENTICAL = (1001, 1002)
PLANTED = [(1010, 1011), (1012, 1013), (1014, 1015), (1016, 1017)]
LONERS = (1020, 1021)  # movies nobody else rated, and disjoint from each other
CLUSTER = list(range(1100, 1130))  # 30 users with one identical set: one huge bucket in every band


def _crafted(with_cluster: bool):
    """Background users with 25 random movies of 400, plus planted pairs; returns (rows, sets)."""
    rng = random.Random(11)
    sets = {u: set(rng.sample(range(1, 401), 25)) for u in range(1, 61)}
    sets[IDENTICAL[0]] = sets[IDENTICAL[1]] = set(rng.sample(range(1, 401), 30))
    for a, b in PLANTED:  # 30 movies each, 27 shared: Jaccard 27/33 = 0.82
        base = rng.sample(range(1, 401), 33)
        sets[a], sets[b] = set(base[:30]), set(base[3:])
    sets[LONERS[0]], sets[LONERS[1]] = set(range(5001, 5021)), set(range(6001, 6021))
    if with_cluster:
        common = set(rng.sample(range(1, 401), 25))
        sets.update({u: set(common) for u in CLUSTER})
    rows = [(u, m, float(1 + (u + m) % 5), 0) for u, movies in sets.items() for m in sorted(movies)]
    return rows, sets


def _truth(sets, n_pairs):
    scored = []
    for a, b in combinations(sorted(sets), 2):
        common = len(sets[a] & sets[b])
        if common:
            scored.append((-common / len(sets[a] | sets[b]), a, b))
    return [(a, b, -j) for j, a, b in sorted(scored)[:n_pairs]]


def _ratings(spark, rows):
    from recsys.data import spark_schema

    return spark.createDataFrame(rows, spark_schema("ratings"))


@pytest.fixture(scope="module")
def crafted(spark):
    rows, sets = _crafted(with_cluster=False)
    return _ratings(spark, rows).cache(), sets


@pytest.mark.slow
def test_banded_finds_identical_first_planted_pairs_and_matches_exact(crafted):
    ratings, sets = crafted
    config = TwinsConfig(min_ratings=1, n_pairs=5, method="banded", compare_exact=True)
    result = find_twins(ratings, config)
    top = [(p["userA"], p["userB"]) for p in result.top]
    assert top[0] == IDENTICAL and result.top[0]["jaccard"] == 1.0
    assert result.top[0]["common"] == result.top[0]["size_a"] == 30
    assert set(top[1:]) == set(PLANTED)  # Jaccard 27/33 = 0.82; the next pair is below 0.4
    assert all(p["jaccard"] == pytest.approx(27 / 33) for p in result.top[1:])
    assert [(p["userA"], p["userB"]) for p in result.top[1:]] == sorted(PLANTED)  # ties: userA, userB
    truth = _truth(sets, 5)
    assert _truth(sets, 6)[-1][2] < 0.4
    assert [(p["userA"], p["userB"]) for p in result.exact_top] == [(a, b) for a, b, _ in truth]
    assert [p["jaccard"] for p in result.exact_top] == pytest.approx([j for _, _, j in truth])
    assert result.stats["recall"] == 1.0
    assert result.stats["users_kept"] == len(sets) and result.stats["users_left_out"] == 0
    assert (result.stats["bands"], result.stats["rows"]) == (42, 3)


@pytest.mark.parametrize("tasks", [1, 2])
def test_exact_method_ranks_ties_by_user_ids_like_brute_force(crafted, tasks):
    """The default method on crafted data: the identical pair, then the four planted pairs tied at
    27/33 in userA, userB order, then the background ties; as brute force over every pair."""
    from recsys.twins import exact_top_pairs

    ratings, sets = crafted
    result = find_twins(ratings, TwinsConfig(min_ratings=1, n_pairs=40))
    truth = _truth(sets, 40)
    assert [(p["userA"], p["userB"]) for p in result.top] == [(a, b) for a, b, _ in truth]
    assert [p["jaccard"] for p in result.top] == [j for _, _, j in truth]
    assert result.exact_top == result.top and result.top[0]["common"] == 30
    assert result.stats["movies"] == len(set().union(*sets.values()))  # counted by the kernel
    kept = {r["user"]: r["items"] for r in movie_sets(ratings, 26).sets.collect()}  # 10 users
    assert kept == {u: sorted(s) for u, s in sets.items() if len(s) >= 26}  # raw ids, sorted
    top, stats = exact_top_pairs(user_sets(ratings, 1), 40, seed=5, tasks=tasks)
    assert top == result.top and stats["tasks"] == tasks


@pytest.mark.slow
def test_approx_join_ranks_by_the_joins_own_distance(crafted):
    """approx_join's candidates carry approxSimilarityJoin's Jaccard; ranking by it gives the same
    top as scoring every candidate again (the earlier route), re-scoring only 2 * n_pairs pairs."""
    from recsys.twins import approx_join_candidates, score_pairs, top_candidates, top_pairs

    ratings, sets = crafted
    result = find_twins(ratings, TwinsConfig(min_ratings=1, n_pairs=5, n_hashes=7, method="approx_join",
                                             compare_exact=True))
    truth = _truth(sets, 5)
    assert [(p["userA"], p["userB"]) for p in result.top] == [(a, b) for a, b, _ in truth]
    assert [p["jaccard"] for p in result.top] == pytest.approx([j for _, _, j in truth], abs=0)
    assert result.stats["recall"] == 1.0 and result.stats["scored_pairs"] == 10

    us = user_sets(ratings, 1)
    candidates = approx_join_candidates(us.sets, us.n_movies, 7, 42).cache()
    n = candidates.count()
    assert n > 20 and candidates.select("userA", "userB").distinct().count() == n
    rescored = {(r["userA"], r["userB"]): r["jaccard"]
                for r in score_pairs(candidates.select("userA", "userB"), us.sets).collect()}
    assert {(r["userA"], r["userB"]): r["jaccard"] for r in candidates.collect()} == pytest.approx(rescored)
    every = top_pairs(score_pairs(candidates.select("userA", "userB"), us.sets), 15)
    assert top_candidates(candidates, us.sets, 15)[0] == every
    candidates.unpersist()


@pytest.mark.slow
def test_pairs_are_unordered_unique_and_share_movies(crafted):
    ratings, sets = crafted
    result = find_twins(ratings, TwinsConfig(min_ratings=1, n_pairs=10_000, n_hashes=16,
                                             target_similarity=0.1, method="banded"))
    pairs = [(p["userA"], p["userB"]) for p in result.top]
    assert pairs and all(a < b for a, b in pairs)
    assert len(set(pairs)) == len(pairs) == result.stats["candidate_pairs"]
    assert all(p["common"] == len(sets[p["userA"]] & sets[p["userB"]]) >= 1 for p in result.top)
    seen = {u for pair in pairs for u in pair}
    assert not seen & set(LONERS)
    jaccards = [p["jaccard"] for p in result.top]
    assert jaccards == sorted(jaccards, reverse=True)


def test_min_ratings_leaves_out_small_users_and_counts_them(crafted):
    ratings, sets = crafted
    kept = user_sets(ratings, min_ratings=26)
    assert kept.users_kept == sum(len(s) >= 26 for s in sets.values()) == 10  # identical + planted
    assert kept.users_left_out == len(sets) - 10
    movies = sorted({m for s in sets.values() if len(s) >= 26 for m in s})
    assert kept.n_movies == len(movies)
    items = {r["user"]: r["items"] for r in kept.sets.collect()}  # 10 rows
    assert all(0 <= i < kept.n_movies for v in items.values() for i in v)
    assert items[IDENTICAL[0]] == sorted(movies.index(m) for m in sets[IDENTICAL[0]])


@pytest.mark.slow
def test_oversized_buckets_are_split_and_results_stay_correct(spark):
    from pyspark.sql import functions as F

    rows, sets = _crafted(with_cluster=True)
    ratings = _ratings(spark, rows)
    cap = 4
    n_pairs = len(CLUSTER) * (len(CLUSTER) - 1) // 2 + 1 + len(PLANTED)  # 435 + 1 + 4 pairs above 0.8
    result = find_twins(ratings, TwinsConfig(min_ratings=1, n_pairs=n_pairs, bucket_cap=cap, method="banded"))
    assert result.stats["largest_bucket"] >= len(CLUSTER)
    assert result.stats["split_buckets"] >= 42  # the cluster's bucket in every band
    truth = {(a, b): j for a, b, j in _truth(sets, n_pairs)}
    found = {(p["userA"], p["userB"]): p["jaccard"] for p in result.top}
    # every reported Jaccard is exact; the planted pairs sit in small buckets and are all found
    assert all(found[p] == pytest.approx(len(sets[p[0]] & sets[p[1]]) / len(sets[p[0]] | sets[p[1]]))
               for p in found)
    assert set(PLANTED) | {IDENTICAL} <= set(found)
    # a cluster pair split in one band meets in another: nearly all 435 are still found
    assert len(set(found) & set(truth)) / len(truth) >= 0.95
    # and no sub-bucket ever holds more than the cap
    us = user_sets(ratings, 1)
    sigs = signatures(us.sets, us.n_movies, 128, 42)
    _, band_rows = banded_candidates(sigs, 42, 3, cap, 42)
    largest = band_rows.groupBy("band", "key", "sub").count().agg(F.max("count")).first()[0]
    assert largest == cap


def test_pair_pearson_hand_computed_and_undefined_pairs(spark):
    rows = [(1, m, r, 0) for m, r in zip((1, 2, 3, 4, 5), (1.0, 2.0, 3.0, 4.0, 5.0), strict=True)]
    rows += [(2, m, r, 0) for m, r in zip((1, 2, 3, 4, 9), (2.0, 4.0, 5.0, 4.0, 1.0), strict=True)]
    rows += [(3, 1, 4.0, 0), (3, 8, 2.0, 0)]  # one movie in common with user 1
    rows += [(4, m, 3.0, 0) for m in (1, 2, 3)]  # constant ratings: zero variance
    rows += [(5, 7, 3.0, 0)]  # nothing in common with user 2
    got = pair_pearson(spark, _ratings(spark, rows), [(1, 2), (1, 3), (1, 4), (2, 5)], min_common=2)
    assert got[(1, 2)][0] == 4 and got[(1, 2)][1] == pytest.approx(3.5 / math.sqrt(23.75))
    assert got[(1, 3)] == (1, None)
    assert got[(1, 4)] == (3, None)
    assert got[(2, 5)] == (0, None)
    stats = summarize([v for _, v in got.values()])
    assert (stats["defined"], stats["undefined"]) == (1, 3)
    assert stats["mean"] == pytest.approx(3.5 / math.sqrt(23.75))


# ---------------------------------------------------------------- the bundled data (slow)


@pytest.fixture(scope="module")
def bundled_exact(bundled):
    """The bundled data's sets (min_ratings 20) and every co-rated pair (~2.9M) with its exact
    Jaccard, scored once and persisted: several tests compare against it."""
    from pyspark import StorageLevel

    from recsys.twins import exact_scored_pairs

    us = user_sets(bundled.ratings, 20)
    scored = exact_scored_pairs(us).persist(StorageLevel.MEMORY_AND_DISK)
    yield us, scored
    scored.unpersist()
    us.sets.unpersist()


@pytest.mark.slow
def test_lsh_recall_against_exact_on_bundled_data(bundled):
    result = find_twins(bundled.ratings, TwinsConfig(method="banded", compare_exact=True))
    assert result.stats["users_kept"] == 610 and result.stats["users_left_out"] == 0
    assert result.stats["recall"] >= 0.95
    # checked independently with pandas on ratings.csv: users 130 and 145 share 21 of 30 movies
    assert (result.exact_top[0]["userA"], result.exact_top[0]["userB"]) == (130, 145)
    assert result.exact_top[0]["jaccard"] == pytest.approx(0.7)
    assert result.top[0] == result.exact_top[0]
    assert len(result.top) == 100


@pytest.mark.slow
@pytest.mark.parametrize("tasks", [1, 3])
def test_exact_method_equals_scoring_every_co_rated_pair_on_bundled_data(bundled_exact, tasks):
    """The exact method at scale is the top of scoring all ~2.9M co-rated pairs of the bundled
    data (ties at the 100th value included), however many tasks split the probing."""
    from recsys.twins import exact_top_pairs, top_pairs

    us, scored = bundled_exact
    top, stats = exact_top_pairs(us, 100, seed=3, tasks=tasks)
    assert top == top_pairs(scored, 100)
    # every task's floor is witnessed by real pairs: never above the true 100th value
    assert stats["tasks"] == tasks and 0 < stats["floor0"] <= stats["final_floor"] <= top[-1]["jaccard"]


@pytest.mark.slow
def test_scoring_by_a_size_floor_gives_the_same_top_as_scoring_every_candidate(bundled_exact):
    """The two-pass scoring skips candidates by their sizes only: the top must not change."""
    from recsys.twins import score_pairs, top_candidates, top_pairs

    us, _ = bundled_exact
    sigs = signatures(us.sets, us.n_movies, 128, 42)
    candidates, _ = banded_candidates(sigs, 42, 3, 500, 42)
    candidates = candidates.cache()
    n_candidates = candidates.count()
    every = top_pairs(score_pairs(candidates.select("userA", "userB"), us.sets), 100)
    top, stats = top_candidates(candidates, us.sets, 100, first_pass=1000)
    assert top == every
    # the 100th of the 1000 most-banded pairs is a floor at or below the true 100th (0.457)
    assert 0.3 < stats["floor"] <= every[-1]["jaccard"]
    assert stats["first_pass_pairs"] == 1000 and 0 < stats["scored_pairs"] < n_candidates
    # with the signatures, most candidates are ruled out before any exact scoring; same top here
    with_sigs, sig_stats = top_candidates(candidates, us.sets, 100, first_pass=1000, sigs=sigs, n_hashes=128)
    assert with_sigs == every
    assert sig_stats["scored_pairs"] < sig_stats["size_passed"] == stats["scored_pairs"]
    # no first pass (or no band counts): every candidate is scored, same top
    for frame, first_pass in ((candidates, 0), (candidates.select("userA", "userB"), 1000)):
        top, stats = top_candidates(frame, us.sets, 100, first_pass)
        assert top == every and stats["floor"] == 0.0 and stats["scored_pairs"] == n_candidates
    candidates.unpersist()


@pytest.mark.slow
@pytest.mark.parametrize("min_ratings", [20, 300])
def test_blocked_exact_reference_matches_spark_exact(bundled, bundled_exact, min_ratings):
    """experiments/twins_recall.py's exact top (sparse products in blocks, the benchmark's recall
    reference at >= 50k users) is the top of scoring every co-rated pair in Spark."""
    import importlib.util
    from pathlib import Path

    from recsys.data import bundled_source
    from recsys.twins import exact_scored_pairs, top_pairs

    script = Path(__file__).resolve().parents[3] / "experiments" / "twins_recall.py"
    spec = importlib.util.spec_from_file_location("twins_recall", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    users, movies = module.read_pairs(bundled_source())
    assert len(users) == 100_836
    top, stats = module.exact_top_blocked(users, movies, min_ratings, 100, block=70, progress=lambda _m: None)
    if min_ratings == 20:
        us, scored = bundled_exact
    else:
        us = user_sets(bundled.ratings, min_ratings)
        scored = exact_scored_pairs(us)
    expected = top_pairs(scored, 100)
    assert stats["users_kept"] == us.users_kept and (us.users_kept == 610) == (min_ratings == 20)
    assert [(t["userA"], t["userB"]) for t in top] == [(e["userA"], e["userB"]) for e in expected]
    assert [t["jaccard"] for t in top] == [e["jaccard"] for e in expected]  # the same float64
