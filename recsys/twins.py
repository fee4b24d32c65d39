"""Customer segmentation: "movie twins", the most similar pairs of users by what they watched.

A user's watching style is the *set* of movies they rated (ratings ignored). Users with fewer
than ``min_ratings`` movies are left out. :func:`find_twins` returns the top ``n_pairs``
distinct unordered user pairs ``userA < userB`` ranked by their **exact** Jaccard similarity
(ties: Jaccard descending, then ``userA``, then ``userB`` ascending), and
:func:`validate_twins` compares the Pearson correlation of the twins' ratings on co-rated movies
with that of uniformly random user pairs.

Methods (``TwinsConfig.method``):

``banded`` (default)
    Spark MLlib's ``MinHashLSH`` gives each user ``n_hashes`` MinHash values. The signature is cut
    into ``b`` bands of ``r`` rows (Leskovec, Rajaraman & Ullman, *Mining of Massive Datasets*,
    ch. 3.4): two users become a candidate pair when all ``r`` values of at least one band agree,
    which happens with probability ``1 - (1 - s**r)**b`` for Jaccard ``s``; the S-curve's
    threshold is about ``(1/b)**(1/r)``. :func:`choose_bands` takes the largest ``r`` (fewest
    false candidates) for which a pair of Jaccard ``target_similarity`` is still a candidate with
    probability >= 0.99 (``n_hashes=128, target_similarity=0.5`` -> 42 bands x 3 rows, threshold
    0.29). Band keys are hashed and self-joined in Spark. A bucket (band, key) with more than
    ``bucket_cap`` users is **split** into sub-buckets of at most ``bucket_cap`` users, by a
    seeded per-band random order: no task ever builds more than ``bucket_cap**2 / 2`` pairs for
    one sub-bucket, and a pair split apart in one band usually meets again in another (true twins
    share most bands). Candidates are then scored by their exact Jaccard.
``approx_join``
    Spark's ``approxSimilarityJoin`` with ``numHashTables = n_hashes`` and a distance threshold of
    1 (every colliding pair that shares a movie is kept), for comparison: it ORs single hashes,
    so its candidate set grows with popular movies and heavy users. The join computes each
    candidate's exact Jaccard distance; the top is ranked by it, and only that top is re-scored.
``exact``
    Every pair sharing at least one movie, by a self-join of ratings on the movie: the true top
    ``n_pairs``. Its cost is ``sum over movies of raters**2 / 2`` (2.9 M rows on ml-latest-small,
    ~10^12 on the full ml-latest): for small data and for measuring recall only.

How cost grows (U users, R ratings, M movies, b bands, C candidate pairs, S mean set size):
the sets are one shuffle of R; signatures cost ``R * n_hashes`` hash evaluations in the JVM
(MinHashLSH's transform) and ``U * n_hashes`` stored values; banding explodes ``U * b`` rows,
drops singleton buckets and self-joins the rest, producing at most ``(U * b) * bucket_cap / 2``
pair rows and usually far fewer (pairs of dissimilar users collide rarely once ``r >= 3``);
scoring joins the ``C`` distinct candidates with both users' sets (``C * S`` work and shuffle),
reduced by :func:`top_candidates` to the candidates whose set sizes can reach the Jaccard of a
first-pass top (pairs met in many bands), found from the sizes alone.
The dense movie index and the random-pair user index are each one single-partition window over
the distinct ids (M or U rows: 86 k / 331 k on ml-latest, a few MB). Nothing that grows with
the data is collected: only the top ``n_pairs`` rows, the ``n_random`` sampled pairs and counts.

The validation (:func:`validate_twins`) computes, in Spark, the Pearson correlation of each
pair's ratings over their co-rated movies; pairs with fewer than ``min_common`` co-rated movies
or with zero variance have no correlation and are counted, never averaged as 0. The summary
statistics (mean, median, standard deviation, bootstrap 95 % interval, difference of means,
permutation-test p-value) run in numpy on those <= ``n_pairs + n_random`` values.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from recsys.constants import DEFAULT_SEED, ITEM_COL, RATING_COL, USER_COL
from recsys.errors import RecsysError, parse_bool

METHODS = ("banded", "approx_join", "exact")
#: Probability that a pair of Jaccard ``target_similarity`` becomes a candidate (banded method).
HIT_PROBABILITY = 0.99
#: MinHashLSH's hash values are below this prime (Spark's MinHashLSH.HASH_PRIME).
_HASH_PRIME = 2038074743
N_BOOTSTRAP = 10_000
N_PERMUTATIONS = 10_000
MAX_PAIRS = 10_000

Progress = Callable[[str], None]


def _quiet(_message: str) -> None:
    pass


@dataclass(frozen=True)
class TwinsConfig:
    """Parameters of the twins stage; exactly these fields are logged as the run's params."""

    min_ratings: int = 20
    """Users who rated fewer movies are left out (>= 1; 20 keeps all of ml-latest-small)."""
    n_pairs: int = 100
    """How many top pairs to return (1..10000)."""
    n_hashes: int = 128
    """MinHash functions per user (MinHashLSH ``numHashTables``), 1..1024."""
    method: str = "banded"
    """``banded``, ``approx_join`` or ``exact`` (see the module docstring)."""
    target_similarity: float = 0.5
    """Banded: pairs at least this similar (Jaccard) are candidates with probability >= 0.99.
    In (0, 1); bands and rows are derived from it and ``n_hashes``."""
    bucket_cap: int = 500
    """Banded: largest bucket self-joined as a whole; bigger ones are split (>= 2)."""
    n_random: int = 100
    """Random distinct user pairs to compare the twins with (0..10000; 0 = no comparison)."""
    min_common: int = 2
    """Fewest co-rated movies for a Pearson correlation to be defined (>= 2)."""
    compare_exact: bool = False
    """Also compute the exact top pairs and log the recall of the chosen method against them."""
    seed: int = DEFAULT_SEED
    """Seed of the MinHash functions, bucket splitting, random pairs, bootstrap, permutations."""

    def __post_init__(self):
        def integer(name, low, high=None):
            value = getattr(self, name)
            try:
                number = int(value)
                if isinstance(value, float | str) and float(value) != number:
                    raise ValueError
            except (TypeError, ValueError) as err:
                raise RecsysError(f"{name}={value!r} must be an integer") from err
            if number < low or (high is not None and number > high):
                allowed = f">= {low}" if high is None else f"in {low}..{high}"
                raise RecsysError(f"{name}={value!r} must be {allowed}")
            object.__setattr__(self, name, number)

        integer("min_ratings", 1)
        integer("n_pairs", 1, MAX_PAIRS)
        integer("n_hashes", 1, 1024)
        integer("bucket_cap", 2)
        integer("n_random", 0, MAX_PAIRS)
        integer("min_common", 2)
        integer("seed", -(2**31), 2**31 - 1)
        if self.method not in METHODS:
            raise RecsysError(f"method {self.method!r} is unknown; allowed: {', '.join(METHODS)}")
        try:
            target = float(self.target_similarity)
        except (TypeError, ValueError) as err:
            raise RecsysError(f"target_similarity={self.target_similarity!r} must be a number") from err
        if not 0.0 < target < 1.0:
            raise RecsysError(f"target_similarity={self.target_similarity!r} must be in (0, 1), e.g. 0.5")
        object.__setattr__(self, "target_similarity", target)
        object.__setattr__(self, "compare_exact", parse_bool("compare_exact", self.compare_exact))

    def as_params(self) -> dict:
        return {**asdict(self), "compare_exact": str(self.compare_exact).lower()}


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


def _vectors(sets, n_movies: int):
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

    vectors = _vectors(sets, n_movies)
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

    vectors = _vectors(sets, n_movies)
    model = minhash_model(vectors, n_hashes, seed)
    joined = model.approxSimilarityJoin(vectors, vectors, 1.0, distCol="distance")
    return (joined.select(F.col("datasetA.user").alias("userA"), F.col("datasetB.user").alias("userB"),
                          "distance")
            .filter(F.col("userA") < F.col("userB"))
            .groupBy("userA", "userB").agg((1.0 - F.min("distance")).alias("jaccard")))


def _jaccard():
    """``common / (size_a + size_b - common)``: Jaccard from the intersection and both sizes."""
    from pyspark.sql import functions as F

    return (F.col("common") / (F.col("size_a") + F.col("size_b") - F.col("common"))).alias("jaccard")


def _with_sizes(pairs, sets):
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
    return scored.select("userA", "userB", "size_a", "size_b", "common", _jaccard())


def _sizes_can_reach(t: float):
    """Pairs whose sizes allow Jaccard >= ``t`` (Jaccard <= min size / max size)."""
    from pyspark.sql import functions as F

    return F.least("size_a", "size_b") >= F.lit(t) * F.greatest("size_a", "size_b")


#: The first pass of :func:`top_candidates` scores this many times ``n_pairs`` candidates.
FIRST_PASS_FACTOR = 10


def top_candidates(candidates, sets, n_pairs: int, first_pass: int = 0) -> tuple[list[dict], dict]:
    """The top ``n_pairs`` of ``candidates`` by exact Jaccard, the same rows as
    ``top_pairs(score_pairs(candidates, sets), n_pairs)``, without carrying every candidate's
    movie arrays through the scoring joins.

    Scoring joins each pair with both users' arrays: at full scale ~10^8 candidates x ~150 movies,
    most of the work. When ``candidates`` has a ``bands`` count and ``first_pass >= n_pairs``, a
    first pass scores only the ``first_pass`` pairs that met in the most bands (likely twins).
    The lowest Jaccard ``f`` of their top ``n_pairs`` is a floor the true ``n_pairs``-th candidate
    reaches (those pairs exist), and since Jaccard <= min(size) / max(size), every candidate with
    Jaccard >= ``f`` has ``min size >= f * max size``. The second pass drops the others using the
    two sizes alone (integers, cheap to join) and scores the rest. Candidates that already carry
    a ``jaccard`` (``approx_join``) are ranked by it, and only ``2 * n_pairs`` of them are scored
    again. Returns ``(top, stats)`` with
    ``floor`` (0: no first pass), ``first_pass_pairs`` and ``scored_pairs`` (candidates whose
    arrays were joined in the second pass).
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    stats: dict = {"floor": 0.0, "first_pass_pairs": 0}
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
    kept = candidates.select("userA", "userB")
    if stats["floor"] > 0:
        t = stats["floor"] - 1e-9  # conservative: keeping a pair too many never changes the top
        kept = _with_sizes(kept, sets).filter(_sizes_can_reach(t)).select("userA", "userB")
    kept = kept.persist(StorageLevel.MEMORY_AND_DISK)
    stats["scored_pairs"] = int(kept.count())
    top = top_pairs(score_pairs(kept, sets), n_pairs)
    kept.unpersist()
    return top, stats


def exact_scored_pairs(user_sets_: UserSets):
    """Every pair sharing at least one movie, with exact Jaccard (self-join on the movie)."""
    from pyspark.sql import functions as F

    flat = user_sets_.sets.select("user", F.explode("items").alias("item"))
    a = flat.select(F.col("user").alias("userA"), "item")
    b = flat.select(F.col("user").alias("userB"), "item")
    common = (a.join(b, "item").filter(F.col("userA") < F.col("userB"))
              .groupBy("userA", "userB").agg(F.count("*").cast("int").alias("common")))
    return _with_sizes(common, user_sets_.sets).select("userA", "userB", "size_a", "size_b", "common",
                                                       _jaccard())


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
            .filter(_sizes_can_reach(t))
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


TOP_COLUMNS = ("userA", "userB", "jaccard", "size_a", "size_b", "common")


def top_pairs(scored, n_pairs: int) -> list[dict]:
    """The ``n_pairs`` best rows: Jaccard descending, then userA, userB ascending (fixed size)."""
    from pyspark.sql import functions as F

    rows = (scored.orderBy(F.col("jaccard").desc(), F.col("userA").asc(), F.col("userB").asc())
            .limit(n_pairs).collect())
    return [{c: r[c] for c in TOP_COLUMNS} for r in rows]


def recall(found: list[dict], truth: list[dict]) -> float:
    """Share of the true top pairs that ``found`` contains (1.0 when ``truth`` is empty)."""
    if not truth:
        return 1.0
    wanted = {(t["userA"], t["userB"]) for t in truth}
    return len(wanted & {(f["userA"], f["userB"]) for f in found}) / len(wanted)


@dataclass
class TwinsResult:
    """What :func:`find_twins` returns: the top pairs (list of dicts, ranked), the exact top
    pairs when computed, the kept users' sets (for validation) and numbers for logging."""

    top: list[dict]
    sets: UserSets
    exact_top: list[dict] | None = None
    stats: dict = field(default_factory=dict)


def find_twins(ratings, config: TwinsConfig, progress: Progress = _quiet,
               user_col: str = USER_COL, item_col: str = ITEM_COL) -> TwinsResult:
    """Top ``config.n_pairs`` user pairs by exact Jaccard of their movie sets.

    ``stats`` holds users_kept, users_left_out, movies, candidate_pairs (banded/approx_join),
    bands, rows, band_threshold, hit_probability_at_target, largest_bucket, split_buckets,
    largest_sub_bucket (banded), scored_pairs and size_floor (see :func:`top_candidates`), recall
    (when ``compare_exact``) and ``*_seconds`` per stage.
    """
    from pyspark import StorageLevel

    stats: dict = {}
    t0 = time.time()
    progress(f"[twins] building movie sets (min_ratings={config.min_ratings})")
    us = user_sets(ratings, config.min_ratings, user_col=user_col, item_col=item_col)
    stats.update(users_kept=us.users_kept, users_left_out=us.users_left_out, movies=us.n_movies)
    stats["sets_seconds"] = time.time() - t0
    progress(f"[twins] {us.users_kept} users kept, {us.users_left_out} left out (< {config.min_ratings} "
             f"movies), {us.n_movies} movies; {stats['sets_seconds']:.1f}s")
    if us.users_kept < 2:
        raise RecsysError(f"min_ratings={config.min_ratings} keeps {us.users_kept} user(s); "
                          "at least 2 are needed to form pairs: lower min_ratings")

    exact_top = None
    if config.method == "exact":
        t = time.time()
        progress("[twins] exact: scoring every pair that shares a movie")
        exact_top = top = top_pairs(exact_scored_pairs(us), config.n_pairs)
        stats["exact_seconds"] = time.time() - t
        progress(f"[twins] exact top {len(exact_top)} in {stats['exact_seconds']:.1f}s")
    else:
        t = time.time()
        if config.method == "banded":
            bands, rows = choose_bands(config.n_hashes, config.target_similarity)
            stats.update(bands=bands, rows=rows, band_threshold=band_threshold(bands, rows),
                         hit_probability_at_target=candidate_probability(config.target_similarity,
                                                                         bands, rows))
            progress(f"[twins] MinHash signatures ({config.n_hashes} hashes) -> {bands} bands x {rows} "
                     f"rows, threshold ~{stats['band_threshold']:.2f}")
            sigs = signatures(us.sets, us.n_movies, config.n_hashes, config.seed)
            candidates, band_rows = banded_candidates(sigs, bands, rows, config.bucket_cap, config.seed)
            from pyspark.sql import functions as F

            band_rows = band_rows.persist(StorageLevel.MEMORY_AND_DISK)
            buckets = band_rows.groupBy("band", "key").agg(F.first("size").alias("size"))
            b = buckets.agg(F.max("size").alias("largest"), F.count("*").alias("n"),
                            F.sum(F.when(F.col("size") > config.bucket_cap, 1).otherwise(0)).alias("split")
                            ).first()
            stats.update(shared_buckets=int(b["n"] or 0), largest_bucket=int(b["largest"] or 0),
                         split_buckets=int(b["split"] or 0))
            # Ranks are consecutive within a bucket, so no sub-bucket exceeds the cap.
            stats["largest_sub_bucket"] = min(stats["largest_bucket"], config.bucket_cap)
            progress(f"[twins] {stats['shared_buckets']} buckets with >= 2 users, largest "
                     f"{stats['largest_bucket']}, {stats['split_buckets']} split (cap {config.bucket_cap})")
        else:
            progress(f"[twins] approxSimilarityJoin with {config.n_hashes} hash tables")
            candidates = approx_join_candidates(us.sets, us.n_movies, config.n_hashes, config.seed)
            band_rows = None
        candidates = candidates.persist(StorageLevel.MEMORY_AND_DISK)
        stats["candidate_pairs"] = int(candidates.count())
        stats["candidates_seconds"] = time.time() - t
        progress(f"[twins] {stats['candidate_pairs']} candidate pairs in {stats['candidates_seconds']:.1f}s")
        t = time.time()
        top, scoring = top_candidates(candidates, us.sets, config.n_pairs,
                                      FIRST_PASS_FACTOR * config.n_pairs if config.method == "banded" else 0)
        stats["scoring_seconds"] = time.time() - t
        stats.update(scored_pairs=scoring["scored_pairs"], size_floor=scoring["floor"])
        if scoring["first_pass_pairs"]:
            progress(f"[twins] first pass: the {scoring['first_pass_pairs']} pairs met in most bands give "
                     f"a Jaccard floor {scoring['floor']:.3f}; {scoring['scored_pairs']} candidates have "
                     "sizes that can reach it")
        progress(f"[twins] exact Jaccard of candidates, top {len(top)} in {stats['scoring_seconds']:.1f}s")
        candidates.unpersist()
        if band_rows is not None:
            band_rows.unpersist()
        if config.compare_exact:
            # The found pairs' lowest Jaccard is a floor the true n-th pair reaches (those pairs
            # exist), so the exact top needs only the pairs at or above it: prefix filtering.
            floor = min(p["jaccard"] for p in top) if len(top) == config.n_pairs else 0.0
            t = time.time()
            progress(f"[twins] exact top {config.n_pairs} for recall: every pair with Jaccard >= {floor:.3f}"
                     f" ({'prefix filtering' if floor > 0 else 'all co-rated pairs'})")
            exact_top = exact_top_pairs(us, config.n_pairs, floor)
            stats.update(exact_seconds=time.time() - t, exact_floor=floor)
            stats["recall"] = recall(top, exact_top)
            progress(f"[twins] recall against exact: {stats['recall']:.3f} (exact top "
                     f"{len(exact_top)} in {stats['exact_seconds']:.1f}s)")
    return TwinsResult(top=top, sets=us, exact_top=exact_top, stats=stats)


# ---------------------------------------------------------------- validation


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


def validate_twins(spark, ratings, result: TwinsResult, config: TwinsConfig, progress: Progress = _quiet,
                   user_col: str = USER_COL, item_col: str = ITEM_COL,
                   rating_col: str = RATING_COL) -> tuple[list[dict], list[dict], dict]:
    """Pearson validation of the twins against ``n_random`` random pairs.

    Returns ``(twins_rows, random_rows, validation)``: the top pairs with ``pearson`` added, the
    random pairs (userA, userB, common, pearson), and the JSON-ready summary
    ``{"twins": summarize, "random": summarize, "comparison": compare_groups, ...}``.
    """
    t = time.time()
    progress(f"[twins] validation: Pearson over co-rated movies, {len(result.top)} twins + "
             f"{config.n_random} random pairs")
    sampled = random_pairs(spark, result.sets.sets, config.n_random, config.seed)
    wanted = [(p["userA"], p["userB"]) for p in result.top] + sampled
    corr = pair_pearson(spark, ratings, wanted, config.min_common, user_col=user_col,
                        item_col=item_col, rating_col=rating_col)
    twins_rows = [{**p, "pearson": corr[(p["userA"], p["userB"])][1]} for p in result.top]
    random_rows = [{"userA": a, "userB": b, "common": corr[(a, b)][0], "pearson": corr[(a, b)][1]}
                   for a, b in sampled]
    validation = {
        "min_common": config.min_common,
        "twins": summarize([r["pearson"] for r in twins_rows], config.seed),
        "random": summarize([r["pearson"] for r in random_rows], config.seed + 1),
        "comparison": compare_groups([r["pearson"] for r in twins_rows],
                                     [r["pearson"] for r in random_rows], config.seed),
        "n_bootstrap": N_BOOTSTRAP, "n_permutations": N_PERMUTATIONS,
    }
    validation["seconds"] = time.time() - t
    progress(f"[twins] validation done in {validation['seconds']:.1f}s")
    return twins_rows, random_rows, validation
