"""Movie twins, candidate pairs: users' movie sets, MinHash signatures, banding (or Spark's
``approxSimilarityJoin``), and the exact-Jaccard scoring that ranks the candidates.

The methods and what their cost grows with are described in :mod:`recsys.twins`, which calls
these in :func:`recsys.twins.find_twins`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from recsys.core.constants import ITEM_COL, USER_COL

#: Probability that a pair of Jaccard ``target_similarity`` becomes a candidate (banded method).
HIT_PROBABILITY = 0.99
#: MinHashLSH's hash values are below this prime (Spark's MinHashLSH.HASH_PRIME).
_HASH_PRIME = 2038074743


# ---------------------------------------------------------------- banding arithmetic


def candidate_probability(similarity: float, bands: int, rows: int) -> float:
    """Probability that a pair of Jaccard ``similarity`` shares at least one band."""
    return 1.0 - (1.0 - similarity**rows) ** bands


def choose_bands(n_hashes: int, target_similarity: float,
                 hit_probability: float = HIT_PROBABILITY) -> tuple[int, int]:
    """``(bands, rows)`` with ``bands * rows <= n_hashes``: the largest ``rows`` such that a pair
    of Jaccard ``target_similarity`` is a candidate with at least ``hit_probability``; ``(n, 1)``
    when none reaches it (then every hash is its own band, like ``approxSimilarityJoin``)."""
    best = (n_hashes, 1)
    for rows in range(1, n_hashes + 1):
        bands = n_hashes // rows
        if candidate_probability(target_similarity, bands, rows) >= hit_probability:
            best = (bands, rows)
    return best


def band_threshold(bands: int, rows: int) -> float:
    """Approximate Jaccard where the banding S-curve is steepest: ``(1/b)**(1/r)``."""
    return (1.0 / bands) ** (1.0 / rows)


# ---------------------------------------------------------------- sets and signatures


@dataclass


class UserSets:
    """Users' movie sets. ``sets`` (persisted): (user, items array<int> of dense movie indices,
    sorted, n_items); counts are plain ints."""

    sets: object
    n_movies: int
    users_kept: int
    users_left_out: int


def movie_sets(ratings, min_ratings: int, user_col: str = USER_COL, item_col: str = ITEM_COL) -> UserSets:
    """Kept users' sets of movie ids as rated (sorted, duplicates collapsed), in one aggregation:
    what the exact method needs (it orders movies itself). ``n_movies`` is left 0: the exact
    kernel counts the movies as it indexes them."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    grouped = (ratings.groupBy(F.col(user_col).alias("user"))
               .agg(F.array_sort(F.collect_set(F.col(item_col).cast("int"))).alias("items"))
               .withColumn("n_items", F.size("items"))
               .persist(StorageLevel.MEMORY_AND_DISK))
    totals = grouped.agg(F.count("*").alias("users"),
                         F.sum(F.when(F.col("n_items") >= min_ratings, 1).otherwise(0)).alias("kept")).first()
    users_total, users_kept = int(totals["users"] or 0), int(totals["kept"] or 0)
    return UserSets(sets=grouped.filter(F.col("n_items") >= min_ratings), n_movies=0, users_kept=users_kept,
                    users_left_out=users_total - users_kept)


def user_sets(ratings, min_ratings: int, user_col: str = USER_COL, item_col: str = ITEM_COL) -> UserSets:
    """Kept users' movie sets with movies re-indexed densely (0..n_movies-1) in Spark."""
    from pyspark import StorageLevel
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    rated = ratings.select(F.col(user_col).alias("user"), F.col(item_col).alias("movie")).distinct()
    counts = rated.groupBy("user").agg(F.count("*").alias("n_items"))
    totals = counts.agg(F.count("*").alias("users"),
                        F.sum(F.when(F.col("n_items") >= min_ratings, 1).otherwise(0)).alias("kept")).first()
    users_total, users_kept = int(totals["users"] or 0), int(totals["kept"] or 0)
    kept = rated.join(counts.filter(F.col("n_items") >= min_ratings).select("user"), "user")
    # One single-partition pass over the distinct movie ids (86 k on ml-latest): a few MB.
    index = (kept.select("movie").distinct()
             .withColumn("item", (F.dense_rank().over(Window.orderBy("movie")) - 1).cast("int")))
    sets = (kept.join(index, "movie").groupBy("user")
            .agg(F.sort_array(F.collect_list("item")).alias("items"))
            .withColumn("n_items", F.size("items"))
            .persist(StorageLevel.MEMORY_AND_DISK))
    n_movies = int(index.count())
    return UserSets(sets=sets, n_movies=n_movies, users_kept=users_kept,
                    users_left_out=users_total - users_kept)


def set_vectors(sets, n_movies: int):
    from pyspark.ml.linalg import SparseVector, VectorUDT
    from pyspark.sql import functions as F

    # Python is the only way to build an ML vector from an array column; one call per user.
    to_vector = F.udf(lambda items: SparseVector(n_movies, items, [1.0] * len(items)), VectorUDT())
    return sets.select("user", to_vector("items").alias("features"))


def minhash_model(vectors, n_hashes: int, seed: int):
    from pyspark.ml.feature import MinHashLSH

    return MinHashLSH(inputCol="features", outputCol="hashes", numHashTables=n_hashes, seed=seed).fit(vectors)


def signatures(sets, n_movies: int, n_hashes: int, seed: int):
    """(user, sig array<int> of ``n_hashes`` MinHash values) from Spark MLlib's MinHashLSH."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    vectors = set_vectors(sets, n_movies)
    model = minhash_model(vectors, n_hashes, seed)
    return model.transform(vectors).select(
        "user", F.transform("hashes", lambda v: vector_to_array(v)[0]).cast("array<int>").alias("sig"))


# ---------------------------------------------------------------- candidates


def banded_candidates(sigs, bands: int, rows: int, bucket_cap: int, seed: int):
    """Distinct candidate pairs (userA < userB) sharing all ``rows`` values of some band.

    Returns ``(pairs, band_rows)``: ``pairs`` (userA, userB, bands) counts the bands (sub-buckets)
    a pair met in, which :func:`top_candidates` uses to find likely twins first; ``band_rows``
    (band, key, user, size, sub) is returned so callers can report bucket sizes. Buckets larger
    than ``bucket_cap`` are split into ``ceil(size / bucket_cap)`` sub-buckets of consecutive
    ranks in a seeded per-band order.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    band = F.explode(F.sequence(F.lit(0), F.lit(bands - 1))).alias("band")
    exploded = sigs.select("user", "sig", band)
    keyed = exploded.select(
        "band", "user",
        F.xxhash64(F.col("band"), F.slice("sig", F.col("band") * rows + 1, F.lit(rows))).alias("key"))
    bucket = Window.partitionBy("band", "key")
    sized = keyed.withColumn("size", F.count("*").over(bucket)).filter(F.col("size") >= 2)
    order = bucket.orderBy(F.xxhash64(F.col("user"), F.col("band"), F.lit(seed)), F.col("user"))
    band_rows = sized.withColumn(
        "sub", F.when(F.col("size") <= bucket_cap, F.lit(0))
        .otherwise(F.floor((F.row_number().over(order) - 1) / bucket_cap)).cast("int"))
    a = band_rows.select("band", "key", "sub", F.col("user").alias("userA"))
    b = band_rows.select("band", "key", "sub", F.col("user").alias("userB"))
    pairs = (a.join(b, ["band", "key", "sub"]).filter(F.col("userA") < F.col("userB"))
             .groupBy("userA", "userB").agg(F.count("*").cast("int").alias("bands")))
    return pairs, band_rows


def approx_join_candidates(sets, n_movies: int, n_hashes: int, seed: int):
    """Distinct pairs (userA < userB) from Spark's ``approxSimilarityJoin`` (OR of single hashes),
    with the ``jaccard`` the join has already computed for each (``1 - distance``: exact)."""
    from pyspark.sql import functions as F

    vectors = set_vectors(sets, n_movies)
    model = minhash_model(vectors, n_hashes, seed)
    joined = model.approxSimilarityJoin(vectors, vectors, 1.0, distCol="distance")
    return (joined.select(F.col("datasetA.user").alias("userA"), F.col("datasetB.user").alias("userB"),
                          "distance")
            .filter(F.col("userA") < F.col("userB"))
            .groupBy("userA", "userB").agg((1.0 - F.min("distance")).alias("jaccard")))


def jaccard_column():
    """``common / (size_a + size_b - common)``: Jaccard from the intersection and both sizes."""
    from pyspark.sql import functions as F

    return (F.col("common") / (F.col("size_a") + F.col("size_b") - F.col("common"))).alias("jaccard")


def with_sizes(pairs, sets):
    """``pairs`` (userA, userB, ...) with both users' set sizes, ``size_a`` and ``size_b``."""
    from pyspark.sql import functions as F

    size_a = sets.select(F.col("user").alias("userA"), F.col("n_items").alias("size_a"))
    size_b = sets.select(F.col("user").alias("userB"), F.col("n_items").alias("size_b"))
    return pairs.join(size_a, "userA").join(size_b, "userB")


def score_pairs(pairs, sets):
    """Exact Jaccard of pairs (userA, userB) from both users' sets.

    Adds size_a, size_b, common (movies rated by both) and jaccard = common / |A union B|.
    """
    from pyspark.sql import functions as F

    sa = sets.select(F.col("user").alias("userA"), F.col("items").alias("items_a"),
                     F.col("n_items").alias("size_a"))
    sb = sets.select(F.col("user").alias("userB"), F.col("items").alias("items_b"),
                     F.col("n_items").alias("size_b"))
    scored = (pairs.join(sa, "userA").join(sb, "userB")
              .withColumn("common", F.size(F.array_intersect("items_a", "items_b"))))
    return scored.select("userA", "userB", "size_a", "size_b", "common", jaccard_column())


def sizes_can_reach(t: float):
    """Pairs whose sizes allow Jaccard >= ``t`` (Jaccard <= min size / max size)."""
    from pyspark.sql import functions as F

    return F.least("size_a", "size_b") >= F.lit(t) * F.greatest("size_a", "size_b")


#: Standard deviations of the signature estimate kept below the floor (:mod:`recsys.twins.verify`).
MARGIN_SD = 4.0


def min_agreement(floor: float, n_hashes: int, margin_sd: float = MARGIN_SD) -> int:
    """Fewest agreeing MinHash values a pair of Jaccard >= ``floor`` falls below with
    probability about ``Phi(-margin_sd)``."""
    if floor <= 0.0:
        return 0
    spread = margin_sd * math.sqrt(floor * (1.0 - floor) / n_hashes)
    return max(0, math.floor(n_hashes * (floor - spread)))


#: The first pass of :func:`top_candidates` scores this many times ``n_pairs`` candidates.
FIRST_PASS_FACTOR = 10


def top_candidates(candidates, sets, n_pairs: int, first_pass: int = 0, sigs=None,
                   n_hashes: int = 0) -> tuple[list[dict], dict]:
    """The top ``n_pairs`` of ``candidates`` by exact Jaccard, the same rows as
    ``top_pairs(score_pairs(candidates, sets), n_pairs)``, without carrying every candidate's
    movie arrays through the scoring joins.

    Scoring joins each pair with both users' arrays: at full scale ~10^8 candidates x ~150 movies,
    most of the work. When ``candidates`` has a ``bands`` count and ``first_pass >= n_pairs``, a
    first pass scores only the ``first_pass`` pairs that met in the most bands (likely twins).
    The lowest Jaccard ``f`` of their top ``n_pairs`` is a floor the true ``n_pairs``-th candidate
    reaches (those pairs exist), and since Jaccard <= min(size) / max(size), every candidate with
    Jaccard >= ``f`` has ``min size >= f * max size``. The second pass drops the others using the
    two sizes alone (integers, cheap to join) and scores the rest; given the users' MinHash
    signatures ``sigs`` (``n_hashes`` values each), the second pass instead rules out, in tasks,
    the candidates whose sizes or signature agreement cannot reach the floor and scores only the
    rest (:mod:`recsys.twins.verify`). Candidates that already carry
    a ``jaccard`` (``approx_join``) are ranked by it, and only ``2 * n_pairs`` of them are scored
    again. Returns ``(top, stats)`` with
    ``floor`` (0: no first pass), ``first_pass_pairs`` and ``scored_pairs`` (candidates whose
    arrays were joined in the second pass).
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    stats: dict = {"floor": 0.0, "first_pass_pairs": 0}
    found: list[dict] = []
    if "jaccard" in candidates.columns:
        # approxSimilarityJoin's candidates carry their Jaccard already: rank by it and score only
        # a slack of 2 * n_pairs (ties at float precision), rather than join every candidate again
        kept = (candidates.orderBy(F.col("jaccard").desc(), "userA", "userB").limit(2 * n_pairs)
                .select("userA", "userB"))
        top = top_pairs(score_pairs(kept, sets), n_pairs)
        stats["scored_pairs"] = min(2 * n_pairs, int(candidates.count()))
        return top, stats
    if first_pass >= n_pairs and "bands" in candidates.columns:
        # a global top-N of (pair, count) rows, n_pairs-sized: nothing that grows with the data
        first = (candidates.orderBy(F.col("bands").desc(), "userA", "userB").limit(first_pass)
                 .select("userA", "userB").persist(StorageLevel.MEMORY_AND_DISK))
        stats["first_pass_pairs"] = int(first.count())
        found = top_pairs(score_pairs(first, sets), n_pairs)
        first.unpersist()
        if len(found) == n_pairs:
            stats["floor"] = min(p["jaccard"] for p in found)
    if sigs is not None and stats["floor"] > 0:
        # most candidates are ruled out by their sizes and signatures, the rest scored in tasks
        from recsys.twins.exact import default_tasks
        from recsys.twins.verify import score_candidates

        tasks = default_tasks(sets.sparkSession)
        rest, counts = score_candidates(candidates, sets, sigs, n_pairs, stats["floor"], n_hashes, tasks)
        stats.update(scored_pairs=counts["scored_exactly"], size_passed=counts["size_passed"],
                     min_agreement=min_agreement(stats["floor"], n_hashes))
        merged = {(p["userA"], p["userB"]): p for p in [*found, *rest]}
        top = sorted(merged.values(), key=lambda p: (-p["jaccard"], p["userA"], p["userB"]))[:n_pairs]
        return [{c: p[c] for c in TOP_COLUMNS} for p in top], stats
    kept = candidates.select("userA", "userB")
    if stats["floor"] > 0:
        t = stats["floor"] - 1e-9  # conservative: keeping a pair too many never changes the top
        kept = with_sizes(kept, sets).filter(sizes_can_reach(t)).select("userA", "userB")
    kept = kept.persist(StorageLevel.MEMORY_AND_DISK)
    stats["scored_pairs"] = int(kept.count())
    top = top_pairs(score_pairs(kept, sets), n_pairs)
    kept.unpersist()
    return top, stats


TOP_COLUMNS = ("userA", "userB", "jaccard", "size_a", "size_b", "common")


def top_pairs(scored, n_pairs: int) -> list[dict]:
    """The ``n_pairs`` best rows: Jaccard descending, then userA, userB ascending (fixed size)."""
    from pyspark.sql import functions as F

    rows = (scored.orderBy(F.col("jaccard").desc(), F.col("userA").asc(), F.col("userB").asc())
            .limit(n_pairs).collect())
    return [{c: r[c] for c in TOP_COLUMNS} for r in rows]
