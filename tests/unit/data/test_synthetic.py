"""The synthetic MovieLens generator: loadable, on target, shaped like the real data, deterministic.

Expected at the small scale used here (500 users, 3,000 movies, 20,000 ratings): item Gini
about 0.75 (ml-latest-small, 610 users and 9.7k movies, has 0.72; the 0.95 of ml-latest needs
its size: heavy users saturate a small catalogue), mean rating about 3.55.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile

import pytest

from recsys.core import RecsysError
from recsys.data import (
    FIRST_TIMESTAMP,
    LAST_TIMESTAMP,
    TWINS_FILE,
    SyntheticConfig,
    generate,
    load_movielens,
    movie_context,
    sidecar_paths,
    user_core,
    user_rows,
)

SMALL = dict(n_users=500, n_movies=3000, n_ratings=20_000, n_twins=5, seed=7)
TINY = dict(n_users=100, n_movies=1000, n_ratings=3000, n_twins=2)


def quiet(_message):
    pass


@pytest.fixture(scope="module")
def release(spark, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("synthetic") / "ml-small-synth")
    stats = generate(spark, SyntheticConfig(**SMALL), out, progress=quiet)
    ml = load_movielens(spark, out, progress=quiet)
    return out, stats, ml


@pytest.mark.slow
def test_loads_through_the_movielens_reader_with_counts_near_targets(release):
    from pyspark.sql import functions as F

    out, stats, ml = release
    n = ml.ratings.count()
    assert abs(n - SMALL["n_ratings"]) <= 0.03 * SMALL["n_ratings"]
    assert stats["ratings"] == n
    assert ml.ratings.select("userId").distinct().count() == SMALL["n_users"]
    assert ml.movies.count() == SMALL["n_movies"] and ml.links.count() == SMALL["n_movies"]
    assert ml.ratings.agg(F.max("movieId")).first()[0] <= SMALL["n_movies"]
    assert 0 < ml.tags.count() < 0.1 * n
    assert ml.ratings.groupBy("userId", "movieId").count().where("count > 1").count() == 0
    assert sorted(os.listdir(out)) == ["links.csv", "movies.csv", "planted_twins.json", "ratings.csv",
                                       "synthetic_stats.json", "tags.csv"]


@pytest.mark.slow
def test_ratings_are_half_stars_with_a_realistic_mean_and_skewed_popularity(release):
    from pyspark.sql import functions as F

    _, stats, ml = release
    doubled = F.col("rating") * 2
    row = ml.ratings.agg(F.avg("rating").alias("mean"),
                         F.sum((doubled != F.floor(doubled)).cast("int")).alias("odd"),
                         F.min("rating").alias("lo"), F.max("rating").alias("hi")).first()
    assert 3.2 <= row["mean"] <= 3.8
    assert row["odd"] == 0 and row["lo"] >= 0.5 and row["hi"] <= 5.0
    assert stats["rating_mean"] == pytest.approx(row["mean"], abs=1e-3)
    assert sum(stats["rating_histogram"].values()) == pytest.approx(1.0, abs=1e-3)
    # whole stars are the most common, like the real histogram (4.0 then 3.0)
    assert stats["rating_histogram"]["4.0"] > stats["rating_histogram"]["4.5"]
    assert stats["item_gini"] > 0.65  # ml-latest-small: 0.717; taste spreads picks a little (0.70 here)
    # long-tailed activity: p90 several times the median, nobody above the catalogue
    assert stats["ratings_per_user_p90"] > 3 * stats["ratings_per_user_median"]
    assert stats["ratings_per_user_max"] <= SMALL["n_movies"] and stats["ratings_per_user_min"] >= 1


@pytest.mark.slow
def test_timestamps_are_distinct_per_user_and_in_range(release):
    from pyspark.sql import functions as F

    _, _, ml = release
    per_user = ml.ratings.groupBy("userId").agg(F.count("*").alias("n"),
                                                F.countDistinct("timestamp").alias("distinct"))
    assert per_user.where("n != distinct").count() == 0
    bounds = ml.ratings.agg(F.min("timestamp"), F.max("timestamp")).first()
    assert FIRST_TIMESTAMP <= bounds[0] and bounds[1] <= LAST_TIMESTAMP


@pytest.mark.slow
def test_planted_twins_are_near_duplicates(release):
    from pyspark.sql import functions as F

    out, stats, ml = release
    with open(os.path.join(out, TWINS_FILE)) as fh:
        twins = json.load(fh)
    assert twins == stats["planted_twins"] and len(twins) == SMALL["n_twins"]
    ids = [t["user"] for t in twins] + [t["twin_of"] for t in twins]
    sets = {r["userId"]: set(r["m"]) for r in ml.ratings.where(F.col("userId").isin(ids))
            .groupBy("userId").agg(F.collect_list("movieId").alias("m")).collect()}
    for t in twins:
        a, b = sets[t["user"]], sets[t["twin_of"]]
        jaccard = len(a & b) / len(a | b)
        assert jaccard >= 0.8
        assert jaccard == pytest.approx(t["jaccard"], abs=1e-6)


def _csv_digest(folder):
    h = hashlib.sha256()
    for name in ("ratings.csv", "movies.csv", "tags.csv", "links.csv"):
        with open(os.path.join(folder, name), "rb") as fh:
            h.update(fh.read())
    return h.hexdigest()


@pytest.mark.slow
def test_same_seed_same_bytes_whatever_the_partitioning_and_format(spark, tmp_path):
    one = str(tmp_path / "one")
    other = str(tmp_path / "other")
    zipped = str(tmp_path / "zipped.zip")
    generate(spark, SyntheticConfig(**TINY), one, partitions=1, progress=quiet)
    generate(spark, SyntheticConfig(**TINY, format="zip"), zipped, partitions=3, progress=quiet)
    generate(spark, SyntheticConfig(**TINY, seed=8), other, partitions=2, progress=quiet)
    with zipfile.ZipFile(zipped) as zf:
        assert zf.testzip() is None
        unzipped = tmp_path / "unzipped"
        zf.extractall(unzipped)
    assert _csv_digest(one) == _csv_digest(str(unzipped / "zipped")) != _csv_digest(other)
    twins_file, stats_file = sidecar_paths(zipped, "zip")
    assert twins_file.endswith("zipped.planted_twins.json") and os.path.exists(stats_file)
    with open(twins_file) as fh, open(os.path.join(one, TWINS_FILE)) as fh_one:
        assert json.load(fh) == json.load(fh_one)
    with pytest.raises(RecsysError, match="already exists"):
        generate(spark, SyntheticConfig(**TINY), one, progress=quiet)


@pytest.mark.parametrize("bad, name", [
    (dict(n_users=0), "n_users"),
    (dict(n_movies=0), "n_movies"),
    (dict(n_ratings=50), "n_ratings"),
    (dict(n_ratings=60_000), "n_ratings"),
    (dict(rank=0), "rank"),
    (dict(noise=-1), "noise"),
    (dict(noise="loud"), "noise"),
    (dict(n_twins=11), "n_twins"),
    (dict(seed=-1), "seed"),
    (dict(n_users="many"), "n_users"),
    (dict(format="tar"), "format"),
    (dict(selection="random"), "selection"),
])
def test_bad_parameters_are_named(bad, name):
    with pytest.raises(RecsysError, match=name):
        SyntheticConfig(**{**TINY, **bad})


def test_remote_and_misnamed_outputs_are_refused(spark, tmp_path):
    with pytest.raises(RecsysError, match="output.*local path"):
        generate(spark, SyntheticConfig(**TINY), "hdfs://namenode/data/synth", progress=quiet)
    with pytest.raises(RecsysError, match="format=zip"):
        generate(spark, SyntheticConfig(**TINY, format="zip"), str(tmp_path / "x"), progress=quiet)


# ---------------------------------------------------------------- selection (numpy only, no Spark)

#: sha256 of user_rows for (user, source, count) = (1, 1, 1), (2, 2, 30), (3, 3, 400), (4, 2, 30)
#: (a twin of 2) with seed 7, 1,000 movies, rank 10, noise 0.5, computed with GENERATOR_VERSION 1
#: (commit be203c1): both draw paths (with replacement and keep first, Efraimidis-Spirakis keys).
VERSION_1_ROWS = "7fc17956e6084ac453bd850962b9df6c9d36203729f8adf106a059549ca70f85"


def test_popularity_selection_reproduces_version_1_exactly():
    import numpy as np

    digest = hashlib.sha256()
    ctx = movie_context(7, 1000, 10, "popularity")
    for user, source, count in [(1, 1, 1), (2, 2, 30), (3, 3, 400), (4, 2, 30)]:
        for column in user_rows(ctx, 7, 0.5, user, source, count):
            digest.update(np.ascontiguousarray(column).tobytes())
    assert digest.hexdigest() == VERSION_1_ROWS


def _users(selection, n_users=300, count=40, n_movies=2000, seed=3):
    """(movie-rank sets, factors, ratings) of ``n_users`` users with ``count`` movies each."""
    ctx = movie_context(seed, n_movies, 10, selection)
    sets, factors = [], []
    for user in range(1, n_users + 1):
        _, ranks, user_factors, *_ = user_core(ctx, seed, user, count)
        assert len(set(ranks.tolist())) == count  # without replacement
        sets.append(set(ranks.tolist()))
        factors.append(user_factors)
    ratings = [user_rows(ctx, seed, 0.5, user, user, count)[1] for user in range(1, n_users + 1)]
    return sets, factors, ratings


def _jaccard_by_factor_similarity(sets, factors):
    """Mean Jaccard of the most and least similar quarter of user pairs by factor cosine."""
    import numpy as np

    f = np.array(factors)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    i, j = np.triu_indices(len(sets), 1)
    cosine = np.einsum("ij,ij->i", f[i], f[j])
    jaccard = np.array([len(sets[a] & sets[b]) / len(sets[a] | sets[b]) for a, b in zip(i, j, strict=True)])
    low, high = np.quantile(cosine, [0.25, 0.75])
    return jaccard[cosine >= high].mean(), jaccard[cosine <= low].mean()


def test_taste_selection_makes_users_with_similar_factors_share_more_movies():
    similar, dissimilar = _jaccard_by_factor_similarity(*_users("taste")[:2])
    assert similar > 1.25 * dissimilar
    # popularity alone: what a user rates says nothing about its tastes
    similar, dissimilar = _jaccard_by_factor_similarity(*_users("popularity")[:2])
    assert similar == pytest.approx(dissimilar, rel=0.1)


def test_taste_selection_keeps_popularity_ratings_and_twins_in_range():
    import numpy as np

    sets, _, ratings = _users("taste")
    per_rank = np.bincount([r for s in sets for r in s], minlength=2000)
    # the head is still the head: the top 1% of the popularity ranking gets >= 10x its share
    assert per_rank[:20].sum() / per_rank.sum() > 0.1
    assert per_rank[:200].sum() > per_rank[1000:1200].sum() * 5
    values = np.concatenate(ratings)
    assert 3.2 <= values.mean() <= 3.8 and 0.35 <= (values >= 4).mean() <= 0.6
    assert values.min() >= 0.5 and values.max() <= 5.0 and np.all(values * 2 == np.round(values * 2))
    ctx = movie_context(3, 2000, 10, "taste")
    source, twin = user_rows(ctx, 3, 0.5, 5, 5, 60)[0], user_rows(ctx, 3, 0.5, 301, 5, 60)[0]
    assert len(set(source) & set(twin)) / len(set(source) | set(twin)) >= 0.8
    assert len(set(twin.tolist())) == 60
