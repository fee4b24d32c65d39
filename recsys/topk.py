"""Exact top-K unseen movies per user for factor models, in one blocked pass.

For a model whose score is the dot product of a user and a movie factor vector (Spark's ALS:
``ALSModel.userFactors`` / ``itemFactors``), :func:`top_k_unseen` scores every requested user
against every movie and keeps, per user, the ``k`` best movies the user did not rate in
training. It replaces, for such models, the slack-tier route of
:func:`recsys.evaluation.recommend` (one ``recommendForUserSubset`` job per tier, then an
anti-join): here the seen movies are removed inside each block, so there is no slack, no tier,
and one Spark pass whatever the users' rating counts.

How (all inside Spark, nothing collected to or broadcast from the driver but two counts):

1. Users are hashed into ``ceil(users / user_block)`` blocks and movies into
   ``ceil(movies / item_block)`` blocks; each block becomes one row (ids and factors as a list).
2. The seen ``(user, movie)`` pairs are grouped by (user block, movie block), so each pair of
   blocks receives only its own seen pairs (the seen set is shipped once, not per block).
3. User blocks x movie blocks (a shuffled Cartesian product, never a broadcast: the movie side
   grows with the catalogue), left-joined with their seen pairs, go through ``mapInArrow``:
   numpy scores the block in chunks of at most ``CHUNK_ELEMENTS`` scores (float64 products of
   the float32 factors), sets seen pairs to ``-inf``, and emits each user's top ``k`` of that
   movie block.
4. With one movie block that is the answer; with several, one window per user keeps the best
   ``k`` of the ``k * movie blocks`` candidates.

Order: score descending, then movieId ascending (the order of ``recommend``). Users without
factors get no rows; users with fewer than ``k`` unseen movies get fewer rows. Cost:
``users x movies x rank`` multiply-adds (as Spark's own ``recommendForAll``), shuffles of
``movies x user blocks + users x movie blocks`` factor vectors, and ``k x users x movie blocks``
candidate rows.
"""

from __future__ import annotations

import math

from recsys.constants import ITEM_COL, USER_COL

SCORE_COL = "score"
RANK_COL = "rank"

#: Users per user block and movies per movie block (a block pair is one unit of work).
DEFAULT_USER_BLOCK = 4096
DEFAULT_ITEM_BLOCK = 16384
#: Largest score matrix a Python worker holds at once (float64: 32 MB).
CHUNK_ELEMENTS = 4_000_000

_OUT_SCHEMA = f"{USER_COL} int, {ITEM_COL} int, {SCORE_COL} double, {RANK_COL} int"


def top_k_unseen(user_factors, item_factors, seen, k: int, *, users=None,
                 user_block: int = DEFAULT_USER_BLOCK, item_block: int = DEFAULT_ITEM_BLOCK,
                 progress=None):
    """Top ``k`` movies per user by ``user_factor . item_factor``, movies in ``seen`` removed.

    ``user_factors`` / ``item_factors``: ``DataFrame[id int, features array<float>]`` (the
    layout of ``ALSModel.userFactors`` / ``itemFactors``). ``seen``: ``DataFrame[userId,
    movieId]`` (e.g. the training ratings). ``users``: optional ``DataFrame[userId]``, the users
    to recommend for (default: every user with factors). Returns a lazy
    ``DataFrame[userId, movieId, score double, rank int]``, rank 1..k.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    k = int(k)
    if k < 1:
        raise ValueError(f"k={k} must be >= 1")
    say = progress or (lambda _m: None)
    uf = user_factors.select(F.col("id").cast("int").alias("_u"), F.col("features").alias("_f"))
    if users is not None:
        wanted = users.select(F.col(USER_COL).cast("int").alias("_u")).distinct()
        uf = uf.join(wanted, "_u", "left_semi")
    itf = item_factors.select(F.col("id").cast("int").alias("_i"), F.col("features").alias("_f"))

    sizes = (uf.agg(F.count(F.lit(1)).alias("nu"))
             .crossJoin(itf.agg(F.count(F.lit(1)).alias("ni"))).first())
    n_users, n_items = int(sizes["nu"]), int(sizes["ni"])
    spark = user_factors.sparkSession
    if n_users == 0 or n_items == 0:
        return spark.createDataFrame([], _OUT_SCHEMA)
    n_ub, n_ib = math.ceil(n_users / user_block), math.ceil(n_items / item_block)
    say(f"[topk] {n_users} users x {n_items} movies in {n_ub} x {n_ib} block(s), top {k} unseen")

    def block_of(col, n):
        # never a literal, even for n == 1: a constant key would turn the seen-pairs join into
        # a broadcast nested-loop join (the seen pairs grow with the data)
        return F.pmod(F.xxhash64(col), F.lit(n)).cast("int")

    ublocks = (uf.withColumn("_ub", block_of("_u", n_ub)).groupBy("_ub")
               .agg(F.collect_list(F.struct("_u", "_f")).alias("_us")))
    iblocks = (itf.withColumn("_ib", block_of("_i", n_ib)).groupBy("_ib")
               .agg(F.collect_list(F.struct("_i", "_f")).alias("_is")))
    seen_pairs = (seen.select(F.col(USER_COL).cast("int").alias("_u"),
                              F.col(ITEM_COL).cast("int").alias("_i"))
                  .join(uf.select("_u"), "_u", "left_semi")
                  .withColumn("_ub", block_of("_u", n_ub)).withColumn("_ib", block_of("_i", n_ib))
                  .groupBy("_ub", "_ib")
                  .agg(F.collect_list(F.struct("_u", "_i")).alias("_ss")))
    # shuffle hints: neither side may be collected to the driver for a broadcast
    pairs = (ublocks.hint("shuffle_replicate_nl").crossJoin(iblocks)
             .join(seen_pairs.hint("shuffle_hash"), ["_ub", "_ib"], "left")
             .select("_us", "_is", "_ss"))
    scored = pairs.mapInArrow(_block_scorer(k), _OUT_SCHEMA)
    if n_ib == 1:
        return scored
    order = Window.partitionBy(USER_COL).orderBy(F.col(SCORE_COL).desc(), F.col(ITEM_COL).asc())
    return (scored.withColumn(RANK_COL, F.row_number().over(order))
            .filter(F.col(RANK_COL) <= k))


def _block_scorer(k: int):
    """The ``mapInArrow`` function: rows of (user block, movie block, seen pairs) -> top-k rows."""

    def run(batches):
        import pyarrow as pa

        for batch in batches:
            for row in range(batch.num_rows):
                out = _score_block(batch.column("_us")[row].values, batch.column("_is")[row].values,
                                   batch.column("_ss")[row], k)
                if out is not None:
                    yield pa.RecordBatch.from_arrays(
                        [pa.array(out[0], pa.int32()), pa.array(out[1], pa.int32()),
                         pa.array(out[2], pa.float64()), pa.array(out[3], pa.int32())],
                        names=[USER_COL, ITEM_COL, SCORE_COL, RANK_COL])

    return run


def _matrix(structs, id_field: str):
    """Arrow ``list<struct<id, features>>`` values -> (ids sorted, float64 factor matrix)."""
    import numpy as np

    ids = structs.field(id_field).to_numpy(zero_copy_only=False).astype(np.int64)
    feats = structs.field("_f")
    flat = feats.flatten().to_numpy(zero_copy_only=False).astype(np.float64)
    mat = flat.reshape(len(ids), -1) if len(ids) else flat.reshape(0, 0)
    order = np.argsort(ids, kind="stable")
    return ids[order], mat[order]


def _score_block(user_structs, item_structs, seen_list, k: int):
    """Top ``k`` unseen per user of one block pair: (users, movies, scores, ranks) arrays or None."""
    import numpy as np

    users, u_mat = _matrix(user_structs, "_u")
    items, i_mat = _matrix(item_structs, "_i")
    if not len(users) or not len(items):
        return None
    if seen_list.is_valid and len(seen_list.values):
        seen_u = seen_list.values.field("_u").to_numpy(zero_copy_only=False).astype(np.int64)
        seen_i = seen_list.values.field("_i").to_numpy(zero_copy_only=False).astype(np.int64)
        rows = np.searchsorted(users, seen_u)
        cols = np.searchsorted(items, seen_i)
        cols_ok = cols < len(items)
        ok = (rows < len(users)) & cols_ok
        ok[ok] &= (users[rows[ok]] == seen_u[ok]) & (items[cols[ok]] == seen_i[ok])
        rows, cols = rows[ok], cols[ok]
        order = np.argsort(rows, kind="stable")
        rows, cols = rows[order], cols[order]
    else:
        rows = cols = np.zeros(0, dtype=np.int64)

    kk = min(k, len(items))
    chunk = max(1, CHUNK_ELEMENTS // len(items))
    parts = []
    for start in range(0, len(users), chunk):
        stop = min(start + chunk, len(users))
        scores = u_mat[start:stop] @ i_mat.T
        lo, hi = np.searchsorted(rows, [start, stop])
        scores[np.isnan(scores)] = -np.inf
        scores[rows[lo:hi] - start, cols[lo:hi]] = -np.inf
        # the kk-th best score of each row; every score >= it (ties included) is a candidate
        kth = np.partition(scores, len(items) - kk, axis=1)[:, len(items) - kk]
        r, c = np.nonzero((scores >= kth[:, None]) & np.isfinite(scores))
        s = scores[r, c]
        order = np.lexsort((items[c], -s, r))
        r, c, s = r[order], c[order], s[order]
        first = np.searchsorted(r, r, side="left")  # start of each row's run (r is sorted)
        rank = np.arange(len(r)) - first + 1
        keep = rank <= kk
        parts.append((users[start:stop][r[keep]], items[c[keep]], s[keep], rank[keep]))
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(4))
