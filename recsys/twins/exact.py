"""Movie twins, the exact reference: the true top pairs by Jaccard (every co-rated pair, or
only those prefix filtering allows above a known floor) and the recall of a method against them.
"""

from __future__ import annotations

from recsys.core.errors import RecsysError
from recsys.twins.candidates import (
    UserSets,
    jaccard_column,
    score_pairs,
    sizes_can_reach,
    top_pairs,
    with_sizes,
)


def exact_scored_pairs(user_sets_: UserSets):
    """Every pair sharing at least one movie, with exact Jaccard (self-join on the movie)."""
    from pyspark.sql import functions as F

    flat = user_sets_.sets.select("user", F.explode("items").alias("item"))
    a = flat.select(F.col("user").alias("userA"), "item")
    b = flat.select(F.col("user").alias("userB"), "item")
    common = (a.join(b, "item").filter(F.col("userA") < F.col("userB"))
              .groupBy("userA", "userB").agg(F.count("*").cast("int").alias("common")))
    return with_sizes(common, user_sets_.sets).select("userA", "userB", "size_a", "size_b", "common",
                                                       jaccard_column())


def prefix_candidates(user_sets_: UserSets, floor: float):
    """Every pair (userA < userB) whose Jaccard can be >= ``floor`` (0 < floor <= 1), exactly.

    Prefix filtering (Chaudhuri, Ganti & Kaushik 2006; Bayardo, Ma & Srikant 2007): order all
    movies by how many kept users rated them (rarest first, then index). Two sets with Jaccard
    >= t share at least one movie among the first ``n - ceil(t * n) + 1`` movies of each set in
    that order, so a self-join on those prefixes alone misses no such pair. Prefixes hold rare
    movies, so the join is a small fraction of :func:`exact_scored_pairs`'s when ``floor`` is
    high. Pairs whose sizes rule out Jaccard >= t (``min size < t * max size``) are dropped.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if not 0.0 < floor <= 1.0:
        raise ValueError(f"floor must be in (0, 1], got {floor}")
    t = floor - 1e-9  # conservative: a longer prefix never loses a pair
    flat = user_sets_.sets.select("user", "n_items", F.explode("items").alias("item"))
    freq = flat.groupBy("item").agg(F.count("*").alias("raters"))  # <= n_movies rows
    ranked = flat.join(freq, "item").withColumn(
        "pos", F.row_number().over(Window.partitionBy("user").orderBy("raters", "item")))
    prefix = ranked.filter(F.col("pos") <= F.col("n_items") - F.ceil(F.lit(t) * F.col("n_items")) + 1)
    a = prefix.select(F.col("user").alias("userA"), F.col("n_items").alias("size_a"), "item")
    b = prefix.select(F.col("user").alias("userB"), F.col("n_items").alias("size_b"), "item")
    return (a.join(b, "item").filter(F.col("userA") < F.col("userB"))
            .filter(sizes_can_reach(t))
            .select("userA", "userB").distinct())


def exact_top_pairs(user_sets_: UserSets, n_pairs: int, floor: float = 0.0) -> list[dict]:
    """The exact top ``n_pairs`` (as :func:`top_pairs` of :func:`exact_scored_pairs`).

    ``floor``: a Jaccard the true ``n_pairs``-th pair is known to reach (the lowest Jaccard of
    ``n_pairs`` distinct pairs found some other way is one: those pairs exist). Then only pairs
    at or above it can be in the top, and :func:`prefix_candidates` finds all of them, which is
    what makes the exact answer affordable at scale. With ``floor`` 0 every co-rated pair is
    scored. If fewer than ``n_pairs`` pairs reach ``floor`` (a wrong floor), it says so.
    """
    from pyspark.sql import functions as F

    if floor <= 0.0:
        return top_pairs(exact_scored_pairs(user_sets_), n_pairs)
    scored = score_pairs(prefix_candidates(user_sets_, floor), user_sets_.sets)
    top = top_pairs(scored.filter(F.col("jaccard") >= F.lit(floor - 1e-12)), n_pairs)
    if len(top) < n_pairs:
        raise RecsysError(f"exact top {n_pairs}: only {len(top)} pairs reach Jaccard {floor}; "
                          "the floor given was not reached by that many pairs")
    return top


def recall(found: list[dict], truth: list[dict]) -> float:
    """Share of the true top pairs that ``found`` contains (1.0 when ``truth`` is empty)."""
    if not truth:
        return 1.0
    wanted = {(t["userA"], t["userB"]) for t in truth}
    return len(wanted & {(f["userA"], f["userB"]) for f in found}) / len(wanted)
