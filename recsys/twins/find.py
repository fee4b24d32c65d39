"""Customer segmentation: "movie twins", the most similar pairs of users by what they watched.

A user's watching style is the *set* of movies they rated (ratings ignored). Users with fewer
than ``min_ratings`` movies are left out. :func:`find_twins` returns the top ``n_pairs``
distinct unordered user pairs ``userA < userB`` ranked by their **exact** Jaccard similarity
(ties: Jaccard descending, then ``userA``, then ``userB`` ascending), and
:func:`validate_twins` compares the Pearson correlation of the twins' ratings on co-rated movies
with that of uniformly random user pairs.

This module holds the configuration and those two entry points; the work is in

- :mod:`recsys.twins.candidates`: movie sets, MinHash signatures, banding, the
  ``approxSimilarityJoin`` route, and the exact-Jaccard scoring of candidates (``top_pairs``);
- :mod:`recsys.twins.exact` and :mod:`recsys.twins.allpairs`: the exact top pairs (a compiled
  AllPairs/PPJoin kernel in Spark tasks) and ``recall`` against them;
- :mod:`recsys.twins.stats`: random pairs, Pearson over co-rated movies, bootstrap intervals and
  the permutation test.

Methods (``TwinsConfig.method``):

``exact`` (default)
    The true top ``n_pairs`` by an exact top-k set-similarity join (AllPairs, Bayardo et al. 2007;
    PPJoin, Xiao et al. 2011): movies ordered rarest first, an inverted index of every set, and
    size, prefix and positional filters above a floor witnessed by real pairs, compiled with
    numba and run in Spark tasks over ranges of probing users (:mod:`recsys.twins.exact`, whose
    docstring and :mod:`recsys.twins.allpairs`'s carry the proof). The floor is the k-th best
    Jaccard found so far, so the work shrinks to the pairs near the top. At ml-latest's size a
    run took 171-196 s where banding and scoring every candidate took 1,540 s
    (``experiments/results/twins.md``).
``banded``
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

import time
from dataclasses import asdict, dataclass, field

from recsys.core.constants import ITEM_COL, RATING_COL, USER_COL
from recsys.core.errors import RecsysError
from recsys.core.params import SEED, param, validate
from recsys.core.progress import Progress, quiet
from recsys.twins.candidates import (
    FIRST_PASS_FACTOR,
    UserSets,
    approx_join_candidates,
    band_threshold,
    banded_candidates,
    candidate_probability,
    choose_bands,
    movie_sets,
    signatures,
    top_candidates,
    user_sets,
)
from recsys.twins.exact import exact_top_pairs, recall
from recsys.twins.stats import (
    N_BOOTSTRAP,
    N_PERMUTATIONS,
    compare_groups,
    pair_pearson,
    random_pairs,
    summarize,
)

METHODS = ("banded", "approx_join", "exact")
MAX_PAIRS = 10_000


@dataclass(frozen=True)
class TwinsConfig:
    """Parameters of the twins stage; exactly these fields are logged as the run's params."""

    min_ratings: int = param(20, "Users who rated fewer movies are left out.", low=1)
    """Users who rated fewer movies are left out (20 keeps all of ml-latest-small)."""
    n_pairs: int = param(100, "Top pairs to return.", low=1, high=MAX_PAIRS)
    """How many top pairs to return."""
    n_hashes: int = param(128, "MinHash functions per user.", low=1, high=1024)
    """MinHash functions per user (MinHashLSH ``numHashTables``)."""
    method: str = param("exact", "How the top pairs are found.", choices=METHODS)
    """``banded``, ``approx_join`` or ``exact`` (see the module docstring)."""
    target_similarity: float = param(0.5, "banded: pairs at least this similar are candidates with "
                                          "probability >= 0.99.", low=0.0, high=1.0, low_open=True,
                                     high_open=True)
    """Banded: pairs at least this similar (Jaccard) are candidates with probability >= 0.99.
    Bands and rows are derived from it and ``n_hashes``."""
    bucket_cap: int = param(500, "banded: buckets with more users are split into sub-buckets of this size.",
                            low=2)
    """Banded: largest bucket self-joined as a whole; bigger ones are split."""
    n_random: int = param(100, "Random user pairs the twins are compared with.", low=0, high=MAX_PAIRS)
    """Random distinct user pairs to compare the twins with (0 = no comparison)."""
    min_common: int = param(2, "Fewest co-rated movies for a Pearson correlation.", low=2)
    """Fewest co-rated movies for a Pearson correlation to be defined."""
    compare_exact: bool = param(False, "Also compute the exact top pairs and log the recall.")
    """Also compute the exact top pairs and log the recall of the chosen method against them."""
    seed: int = SEED.field(low=-(2**31), high=2**31 - 1)
    """Seed of the MinHash functions, bucket splitting, random pairs, bootstrap, permutations."""

    def __post_init__(self):
        validate(self)

    def as_params(self) -> dict:
        return {**asdict(self), "compare_exact": str(self.compare_exact).lower()}


@dataclass
class TwinsResult:
    """What :func:`find_twins` returns: the top pairs (list of dicts, ranked), the exact top
    pairs when computed, the kept users' sets (for validation) and numbers for logging."""

    top: list[dict]
    sets: UserSets
    exact_top: list[dict] | None = None
    stats: dict = field(default_factory=dict)


def find_twins(ratings, config: TwinsConfig, progress: Progress = quiet,
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
    # exact orders the movies itself; MinHash needs them indexed densely (one more pass)
    sets_of = movie_sets if config.method == "exact" else user_sets
    us = sets_of(ratings, config.min_ratings, user_col=user_col, item_col=item_col)
    stats.update(users_kept=us.users_kept, users_left_out=us.users_left_out)
    if us.n_movies:
        stats["movies"] = us.n_movies
    stats["sets_seconds"] = time.time() - t0
    progress(f"[twins] {us.users_kept} users kept, {us.users_left_out} left out (< {config.min_ratings} "
             f"movies); {stats['sets_seconds']:.1f}s")
    if us.users_kept < 2:
        raise RecsysError(f"min_ratings={config.min_ratings} keeps {us.users_kept} user(s); "
                          "at least 2 are needed to form pairs: lower min_ratings")

    exact_top = None
    if config.method == "exact":
        t = time.time()
        progress(f"[twins] exact: AllPairs/PPJoin top {config.n_pairs} (size, prefix and positional filters)")
        exact_top = top = _exact(us, config, stats)
        stats["exact_seconds"] = time.time() - t
        progress(f"[twins] exact top {len(exact_top)} in {stats['exact_seconds']:.1f}s: "
                 f"{stats['exact_tasks']} tasks, {stats['exact_candidates']} candidates, "
                 f"{stats['exact_verified']} verified, {stats['movies']} movies, floor "
                 f"{stats['exact_floor0']:.3f} -> {stats['exact_final_floor']:.3f}")
    else:
        t = time.time()
        if config.method == "banded":
            bands, rows = choose_bands(config.n_hashes, config.target_similarity)
            stats.update(bands=bands, rows=rows, band_threshold=band_threshold(bands, rows),
                         hit_probability_at_target=candidate_probability(config.target_similarity,
                                                                         bands, rows))
            progress(f"[twins] MinHash signatures ({config.n_hashes} hashes) -> {bands} bands x {rows} "
                     f"rows, threshold ~{stats['band_threshold']:.2f}")
            # banding and the signature check both read them: computed once
            sigs = signatures(us.sets, us.n_movies, config.n_hashes, config.seed).persist(
                StorageLevel.MEMORY_AND_DISK)
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
            band_rows = sigs = None
        candidates = candidates.persist(StorageLevel.MEMORY_AND_DISK)
        stats["candidate_pairs"] = int(candidates.count())
        stats["candidates_seconds"] = time.time() - t
        progress(f"[twins] {stats['candidate_pairs']} candidate pairs in {stats['candidates_seconds']:.1f}s")
        t = time.time()
        banded = config.method == "banded"
        top, scoring = top_candidates(candidates, us.sets, config.n_pairs,
                                      FIRST_PASS_FACTOR * config.n_pairs if banded else 0,
                                      sigs=sigs, n_hashes=config.n_hashes)
        stats["scoring_seconds"] = time.time() - t
        stats.update(scored_pairs=scoring["scored_pairs"], size_floor=scoring["floor"])
        stats.update({key: scoring[key] for key in ("size_passed", "min_agreement") if key in scoring})
        if scoring["first_pass_pairs"]:
            checks = f"{scoring['scored_pairs']} have sizes that can reach it"
            if "size_passed" in scoring:
                checks = (f"{scoring['size_passed']} have sizes that can reach it, {scoring['scored_pairs']} "
                          f"also >= {scoring['min_agreement']} of {config.n_hashes} MinHash values in common")
            progress(f"[twins] first pass: the {scoring['first_pass_pairs']} pairs met in most bands give "
                     f"a Jaccard floor {scoring['floor']:.3f}; of the candidates, {checks}")
        progress(f"[twins] exact Jaccard of candidates, top {len(top)} in {stats['scoring_seconds']:.1f}s")
        candidates.unpersist()
        if band_rows is not None:
            band_rows.unpersist()
            sigs.unpersist()
        if config.compare_exact:
            t = time.time()
            progress(f"[twins] exact top {config.n_pairs} for recall")
            exact_top = _exact(us, config, stats)
            stats["exact_seconds"] = time.time() - t
            stats["recall"] = recall(top, exact_top)
            progress(f"[twins] recall against exact: {stats['recall']:.3f} (exact top "
                     f"{len(exact_top)} in {stats['exact_seconds']:.1f}s)")
    return TwinsResult(top=top, sets=us, exact_top=exact_top, stats=stats)


def _exact(us: UserSets, config: TwinsConfig, stats: dict) -> list[dict]:
    """:func:`exact_top_pairs`, its counters added to ``stats`` as ``exact_<name>``."""
    top, counters = exact_top_pairs(us, config.n_pairs, seed=config.seed)
    stats.setdefault("movies", counters.pop("movies"))  # the kernel counted them
    stats.update({f"exact_{name}": value for name, value in counters.items()})
    return top


# ---------------------------------------------------------------- validation


def validate_twins(spark, ratings, result: TwinsResult, config: TwinsConfig, progress: Progress = quiet,
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
