"""Movie twins, validation statistics: random user pairs, the Pearson correlation of pairs'
ratings over their co-rated movies (in Spark), and the summaries compared in numpy (bootstrap
intervals, permutation test).
"""

from __future__ import annotations

import math

import numpy as np

from recsys.core.constants import DEFAULT_SEED, ITEM_COL, RATING_COL, USER_COL

N_BOOTSTRAP = 10_000
N_PERMUTATIONS = 10_000


def random_pairs(spark, sets, n_random: int, seed: int) -> list[tuple[int, int]]:
    """``n_random`` distinct unordered user pairs drawn uniformly (seeded) from ``sets``' users.

    Users get a dense index in Spark (one single-partition window over the user ids); only the
    count and the drawn pairs reach the driver. Fewer pairs when fewer exist.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if n_random <= 0:
        return []
    index = sets.select("user").withColumn("idx", (F.row_number().over(Window.orderBy("user")) - 1))
    n_users = int(sets.count())
    wanted = min(n_random, n_users * (n_users - 1) // 2)
    rng = np.random.default_rng(seed)
    drawn: list[tuple[int, int]] = []
    seen: set[tuple[int, int]] = set()
    while len(drawn) < wanted:
        i, j = (int(x) for x in rng.integers(0, n_users, size=2))
        pair = (min(i, j), max(i, j))
        if i != j and pair not in seen:
            seen.add(pair)
            drawn.append(pair)
    if not drawn:
        return []
    picks = spark.createDataFrame(drawn, "ia long, ib long")
    ia = index.select(F.col("idx").alias("ia"), F.col("user").alias("userA"))
    ib = index.select(F.col("idx").alias("ib"), F.col("user").alias("userB"))
    rows = picks.join(ia, "ia").join(ib, "ib").select("ia", "ib", "userA", "userB").collect()
    by_index = {(r["ia"], r["ib"]): (r["userA"], r["userB"]) for r in rows}
    return [by_index[p] for p in drawn]


def pair_pearson(spark, ratings, pairs: list[tuple[int, int]], min_common: int = 2,
                 user_col: str = USER_COL, item_col: str = ITEM_COL, rating_col: str = RATING_COL) -> dict:
    """Pearson correlation of each pair's ratings over their co-rated movies.

    Returns ``{(userA, userB): (common, pearson or None)}`` for every given pair; ``None`` when
    the pair has fewer than ``min_common`` co-rated movies or either side has zero variance.
    """
    from pyspark.sql import functions as F

    if not pairs:
        return {}
    wanted = spark.createDataFrame(sorted(set(pairs)), "userA int, userB int")
    r = ratings.select(F.col(user_col).alias("u"), F.col(item_col).alias("m"), F.col(rating_col).alias("r"))
    ra = r.select(F.col("u").alias("userA"), "m", F.col("r").alias("x"))
    rb = r.select(F.col("u").alias("userB"), "m", F.col("r").alias("y"))
    co = F.broadcast(wanted).join(ra, "userA").join(rb, ["userB", "m"])
    sums = co.groupBy("userA", "userB").agg(
        F.count("*").alias("n"), F.sum("x").alias("sx"), F.sum("y").alias("sy"),
        F.sum(F.col("x") * F.col("x")).alias("sxx"), F.sum(F.col("y") * F.col("y")).alias("syy"),
        F.sum(F.col("x") * F.col("y")).alias("sxy")).collect()
    out = {p: (0, None) for p in pairs}
    for s in sums:
        out[(s["userA"], s["userB"])] = (int(s["n"]), pearson_from_sums(
            s["n"], s["sx"], s["sy"], s["sxx"], s["syy"], s["sxy"], min_common))
    return out


def pearson_from_sums(n, sx, sy, sxx, syy, sxy, min_common: int = 2) -> float | None:
    """Pearson r from sums; ``None`` below ``min_common`` points or with zero variance.

    Ratings are multiples of 0.5, so these sums are exact in floating point and a zero variance
    is exactly 0.
    """
    if n < max(min_common, 2):
        return None
    vx, vy = n * sxx - sx * sx, n * syy - sy * sy
    if vx <= 0 or vy <= 0:
        return None
    return max(-1.0, min(1.0, (n * sxy - sx * sy) / math.sqrt(vx * vy)))


def summarize(values: list[float | None], seed: int = DEFAULT_SEED, n_boot: int = N_BOOTSTRAP) -> dict:
    """count, defined, undefined, mean, median, std (ddof=1), bootstrap 95 % interval of the mean.

    Undefined values (``None``) are counted and left out of every statistic.
    """
    defined = np.array([v for v in values if v is not None], dtype=float)
    out = {"count": len(values), "defined": int(defined.size), "undefined": len(values) - int(defined.size),
           "mean": None, "median": None, "std": None, "ci_low": None, "ci_high": None}
    if defined.size:
        out.update(mean=float(defined.mean()), median=float(np.median(defined)))
        out["std"] = float(defined.std(ddof=1)) if defined.size > 1 else 0.0
        rng = np.random.default_rng(seed)
        means = defined[rng.integers(0, defined.size, size=(n_boot, defined.size))].mean(axis=1)
        out["ci_low"], out["ci_high"] = (float(x) for x in np.percentile(means, [2.5, 97.5]))
    return out


def compare_groups(twins: list[float | None], others: list[float | None], seed: int = DEFAULT_SEED,
                   n_boot: int = N_BOOTSTRAP, n_perm: int = N_PERMUTATIONS) -> dict:
    """Difference of mean correlations (twins - random), its bootstrap 95 % interval and a
    two-sided permutation-test p-value ``(hits + 1) / (n_perm + 1)``; None when a group is empty."""
    a = np.array([v for v in twins if v is not None], dtype=float)
    b = np.array([v for v in others if v is not None], dtype=float)
    out = {"difference": None, "diff_ci_low": None, "diff_ci_high": None, "p_value": None}
    if not a.size or not b.size:
        return out
    rng = np.random.default_rng(seed)
    observed = a.mean() - b.mean()
    boot = (a[rng.integers(0, a.size, size=(n_boot, a.size))].mean(axis=1)
            - b[rng.integers(0, b.size, size=(n_boot, b.size))].mean(axis=1))
    pooled = np.concatenate([a, b])
    perms = np.argsort(rng.random((n_perm, pooled.size)), axis=1)
    shuffled = pooled[perms]
    diffs = shuffled[:, :a.size].mean(axis=1) - shuffled[:, a.size:].mean(axis=1)
    hits = int(np.sum(np.abs(diffs) >= abs(observed) - 1e-12))
    low, high = np.percentile(boot, [2.5, 97.5])
    out.update(difference=float(observed), diff_ci_low=float(low), diff_ci_high=float(high),
               p_value=(hits + 1) / (n_perm + 1))
    return out
