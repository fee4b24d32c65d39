"""Exact top-K unseen movies per user for factor models, in one blocked pass.

For a model whose score is the dot product of a user and a movie factor vector (Spark's ALS:
``ALSModel.userFactors`` / ``itemFactors``), :func:`top_k_unseen` scores every requested user
against every movie and keeps, per user, the ``k`` best movies the user did not rate in
training. It replaces, for such models, the slack-tier route of
:func:`recsys.evaluation.recommend` (one ``recommendForUserSubset`` job per tier, then an
anti-join): here the seen movies are removed inside each block, so there is no slack, no tier,
and one Spark pass whatever the users' rating counts. :func:`recsys.recommend.batch.recommend_all` uses it
for every user of a model.

How (all inside Spark, nothing collected to or broadcast from the driver but two counts):

1. Users are hashed into ``ceil(users / user_block)`` blocks and movies into
   ``ceil(movies / item_block)`` blocks; each block becomes one row (ids and factors as a list).
   The default movie block (131,072) holds ml-latest's whole catalogue (86.5k movies: 22 MB of
   rank-64 factors), so step 4 is skipped there.
2. Each user block row gets its users' seen ``(user, movie)`` pairs (grouped by user block,
   joined before step 3: a join after the product would shuffle every copy of the movie
   factors again; measured 1.8 GB at full scale).
3. User blocks x movie blocks (a Cartesian product, never a broadcast: the movie side grows
   with the catalogue) go through ``mapInArrow``. Per chunk of at most ``CHUNK_ELEMENTS``
   scores, numpy computes the float32 product of the float32 factors (sgemm: 4-5x faster here
   than the float64 product, ~0.4 ms per user against 86.5k movies at rank 64), sets seen pairs
   to ``-inf``, and finds candidates without sorting or scanning the whole row twice: the
   ``k``-th largest of the per-64-movie group maxima is a score that at least ``k`` movies
   reach, so only groups whose maximum reaches it (minus the float32 error bound below) are
   looked at. The candidates are rescored in float64 and ranked on that, so the result (rows,
   order, scores) is the float64 ranking's, not float32's.
   Float32 error bound: for float32 inputs, ``|fl32(p.q) - p.q| <= rank * 2**-24 * |p| |q|``
   (to first order, FMA or not); the margin is twice that for both sides of a comparison,
   times 2 for safety, with ``|q|`` the block's largest movie norm.
4. With one movie block that is the answer; with several, one window per user keeps the best
   ``k`` of the ``k * movie blocks`` candidates.

Order: score descending, then movieId ascending (the order of ``recommend``). Users without
factors get no rows; users with fewer than ``k`` unseen movies get fewer rows; a NaN score
(NaN factors) is never recommended. Cost: ``users x movies x rank`` multiply-adds (as Spark's
own ``recommendForAll``), two float32 passes over each score chunk, reading ``movies x user
blocks`` factor vectors, one shuffle of the seen pairs, and ``k x users x movie blocks``
candidate rows.
"""

from __future__ import annotations

import math

from recsys.core.constants import ITEM_COL, RANK_COL, SCORE_COL, USER_COL
from recsys.core.progress import Progress, quiet

#: Users per user block and movies per movie block (a block pair is one unit of work).
DEFAULT_USER_BLOCK = 4096
DEFAULT_ITEM_BLOCK = 131072
#: Largest score matrix a Python worker holds at once (float32: 64 MB). Fewer than ~100 users
#: per sgemm call costs up to 2x per score (measured: 46 users 455 us/user, 256 users 336 us).
CHUNK_ELEMENTS = 16_000_000
#: Movies per group whose maximum screens the candidates (step 3 of the module docstring).
GROUP = 64

_OUT_SCHEMA = f"{USER_COL} int, {ITEM_COL} int, {SCORE_COL} double, {RANK_COL} int"


def top_k_unseen(user_factors, item_factors, seen, k: int, *, users=None,
                 user_block: int = DEFAULT_USER_BLOCK, item_block: int = DEFAULT_ITEM_BLOCK,
                 progress: Progress = quiet, counts: dict | None = None, blocks: dict | None = None):
    """Top ``k`` movies per user by ``user_factor . item_factor``, movies in ``seen`` removed.

    ``user_factors`` / ``item_factors``: ``DataFrame[id int, features array<float>]`` (the
    layout of ``ALSModel.userFactors`` / ``itemFactors``). ``seen``: ``DataFrame[userId,
    movieId]`` (e.g. the training ratings). ``users``: optional ``DataFrame[userId]``, the users
    to recommend for (default: every user with factors). Returns a lazy
    ``DataFrame[userId, movieId, score double, rank int]``, rank 1..k. ``counts``: a dict that,
    when given, receives ``users`` (users with factors that are recommended for) and ``movies``.
    ``blocks``: a dict kept by a caller that ranks many models for the same ``seen`` and
    ``users`` (a search's trials): the seen pairs grouped by user block (step 2, a shuffle of
    every seen pair) are looked up in it under the user block count, from :func:`seen_blocks`,
    instead of being grouped again.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    k = int(k)
    if k < 1:
        raise ValueError(f"k={k} must be >= 1")
    uf = user_factors.select(F.col("id").cast("int").alias("_u"), F.col("features").alias("_f"))
    if users is not None:
        wanted = users.select(F.col(USER_COL).cast("int").alias("_u")).distinct()
        uf = uf.join(wanted, "_u", "left_semi")
    itf = item_factors.select(F.col("id").cast("int").alias("_i"), F.col("features").alias("_f"))

    sizes = (uf.agg(F.count(F.lit(1)).alias("nu"))
             .crossJoin(itf.agg(F.count(F.lit(1)).alias("ni"))).first())
    n_users, n_items = int(sizes["nu"]), int(sizes["ni"])
    if counts is not None:
        counts.update(users=n_users, movies=n_items)
    spark = user_factors.sparkSession
    if n_users == 0 or n_items == 0:
        return spark.createDataFrame([], _OUT_SCHEMA)
    n_ub, n_ib = user_blocks(n_users, user_block), math.ceil(n_items / item_block)
    progress(f"[topk] {n_users} users x {n_items} movies in {n_ub} x {n_ib} block(s), top {k} unseen")

    seen_pairs = (blocks or {}).get(n_ub)
    if seen_pairs is None:
        seen_pairs = seen_blocks(seen, users, n_ub)
    # one partition per user block (hash collisions aside): adaptive execution would otherwise
    # coalesce the blocks into a few partitions, and one Arrow batch would then hold dozens of
    # copies of the movie block (22 MB each at full scale)
    ublocks = (uf.withColumn("_ub", _block_of("_u", n_ub)).groupBy("_ub")
               .agg(F.collect_list(F.struct("_u", "_f")).alias("_us"))
               .join(seen_pairs.hint("shuffle_hash"), "_ub", "left")
               .repartition(n_ub, "_ub"))
    # one partition per movie block too: the product has (user side x movie side) partitions,
    # and the groupBy's default count (spark.sql.shuffle.partitions) would make most of them empty
    # tasks (16 x 16 = 256 tasks for 16 user blocks and one movie block)
    iblocks = (itf.withColumn("_ib", _block_of("_i", n_ib)).groupBy("_ib")
               .agg(F.collect_list(F.struct("_i", "_f")).alias("_is"))
               .repartition(n_ib, "_ib"))
    # shuffle hint: neither side may be collected to the driver for a broadcast
    pairs = ublocks.hint("shuffle_replicate_nl").crossJoin(iblocks).select("_us", "_is", "_ss")
    scored = pairs.mapInArrow(_block_scorer(k), _OUT_SCHEMA)
    if n_ib == 1:
        return scored
    order = Window.partitionBy(USER_COL).orderBy(F.col(SCORE_COL).desc(), F.col(ITEM_COL).asc())
    return (scored.withColumn(RANK_COL, F.row_number().over(order))
            .filter(F.col(RANK_COL) <= k))


def user_blocks(n_users: int, user_block: int = DEFAULT_USER_BLOCK) -> int:
    """How many user blocks :func:`top_k_unseen` makes for ``n_users`` users with factors."""
    return max(1, math.ceil(n_users / user_block))


def _block_of(col, n: int):
    """The block (0..n-1) of an id column: a hash, so blocks are even whatever the ids."""
    from pyspark.sql import functions as F

    # never a literal, even for n == 1: a constant key would turn the seen-pairs join into a
    # broadcast nested-loop join (the seen pairs grow with the data)
    return F.pmod(F.xxhash64(col), F.lit(n)).cast("int")


def seen_blocks(seen, users, n_ub: int):
    """Step 2's seen pairs ``DataFrame[_ub, _ss list<struct<_u, _i>>]``: the ``seen`` pairs of
    ``users`` (all of them when None), grouped into ``n_ub`` user blocks. Pairs of users that
    have no factors are carried but never match a scored user (:func:`_seen_cells`)."""
    from pyspark.sql import functions as F

    pairs = seen.select(F.col(USER_COL).cast("int").alias("_u"), F.col(ITEM_COL).cast("int").alias("_i"))
    if users is not None:
        wanted = users.select(F.col(USER_COL).cast("int").alias("_u")).distinct()
        pairs = pairs.join(wanted, "_u", "left_semi")
    return (pairs.withColumn("_ub", _block_of("_u", n_ub))
            .groupBy("_ub")
            .agg(F.collect_list(F.struct("_u", "_i")).alias("_ss")))


def _block_scorer(k: int):
    """The ``mapInArrow`` function: rows of (user block, movie block, seen pairs) -> top-k rows."""

    def run(batches):
        import pyarrow as pa

        for batch in batches:
            for row in range(batch.num_rows):  # one row per block pair: a few per task
                out = _score_block(batch.column("_us")[row].values, batch.column("_is")[row].values,
                                   batch.column("_ss")[row], k)
                if out is not None:
                    yield pa.RecordBatch.from_arrays(
                        [pa.array(out[0], pa.int32()), pa.array(out[1], pa.int32()),
                         pa.array(out[2], pa.float64()), pa.array(out[3], pa.int32())],
                        names=[USER_COL, ITEM_COL, SCORE_COL, RANK_COL])

    return run


def _matrix(structs, id_field: str):
    """Arrow ``list<struct<id, features>>`` values -> (ids sorted, float32 factor matrix)."""
    import numpy as np

    ids = structs.field(id_field).to_numpy(zero_copy_only=False).astype(np.int64)
    feats = structs.field("_f")
    flat = feats.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    mat = flat.reshape(len(ids), -1) if len(ids) else flat.reshape(0, 0)
    order = np.argsort(ids, kind="stable")
    return ids[order], np.ascontiguousarray(mat[order])


def _seen_cells(seen_list, users, items):
    """(row, column) indices into the block's score matrix of its seen pairs, sorted by row."""
    import numpy as np

    if not seen_list.is_valid or not len(seen_list.values):
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    seen_u = seen_list.values.field("_u").to_numpy(zero_copy_only=False).astype(np.int64)
    seen_i = seen_list.values.field("_i").to_numpy(zero_copy_only=False).astype(np.int64)
    rows = np.searchsorted(users, seen_u)
    cols = np.searchsorted(items, seen_i)
    ok = (rows < len(users)) & (cols < len(items))
    # pairs of other movie blocks (the list holds the user block's pairs for every movie block)
    ok[ok] &= (users[rows[ok]] == seen_u[ok]) & (items[cols[ok]] == seen_i[ok])
    rows, cols = rows[ok], cols[ok]
    order = np.argsort(rows, kind="stable")
    return rows[order], cols[order]


def _score_block(user_structs, item_structs, seen_list, k: int):
    """Top ``k`` unseen per user of one block pair: (users, movies, scores, ranks) arrays or None."""
    import numpy as np

    users, u_mat = _matrix(user_structs, "_u")
    items, i_mat = _matrix(item_structs, "_i")
    n_items = len(items)
    if not len(users) or not n_items:
        return None
    rows, cols = _seen_cells(seen_list, users, items)
    kk = min(k, n_items)
    group = max(1, min(GROUP, n_items // kk))  # at least kk whole groups
    n_groups = n_items // group
    whole = n_groups * group
    finite = bool(np.isfinite(u_mat).all() and np.isfinite(i_mat).all())
    rank = u_mat.shape[1]
    u_norm = np.linalg.norm(u_mat.astype(np.float64), axis=1)
    i_norm = np.linalg.norm(i_mat.astype(np.float64), axis=1)
    i_norm_max = float(np.max(i_norm[np.isfinite(i_norm)], initial=0.0))
    # 2 x (float32 error bound of one score) x 2 for safety; see the module docstring
    margin = 4.0 * rank * 2.0 ** -24 * u_norm * i_norm_max + 1e-30
    offsets = np.arange(group)

    chunk = max(1, CHUNK_ELEMENTS // n_items)
    parts = []
    for start in range(0, len(users), chunk):
        stop = min(start + chunk, len(users))
        scores = u_mat[start:stop] @ i_mat.T
        if not finite:
            scores[~np.isfinite(scores)] = -np.inf
        lo, hi = np.searchsorted(rows, [start, stop])
        scores[rows[lo:hi] - start, cols[lo:hi]] = -np.inf
        maxima = scores[:, :whole].reshape(stop - start, n_groups, group).max(axis=2)
        # at least kk movies score >= the kk-th largest group maximum (each maximum is one movie)
        floor = np.partition(maxima, n_groups - kk, axis=1)[:, n_groups - kk] - margin[start:stop]
        g_row, g_idx = np.nonzero(maxima >= floor[:, None])
        cand_r = np.repeat(g_row, group)
        cand_c = (g_idx[:, None] * group + offsets).ravel()
        if whole < n_items:  # the last, partial group
            t_row, t_col = np.nonzero(scores[:, whole:] >= floor[:, None])
            cand_r = np.concatenate([cand_r, t_row])
            cand_c = np.concatenate([cand_c, t_col + whole])
        keep = scores[cand_r, cand_c] >= floor[cand_r]
        keep &= np.isfinite(scores[cand_r, cand_c])
        r, c = cand_r[keep], cand_c[keep]
        # rank on float64 scores of the float32 factors (exact products, sums rounded once per
        # term): the float32 pass only chose the candidates
        s = np.einsum("ij,ij->i", u_mat[start + r].astype(np.float64), i_mat[c].astype(np.float64))
        ok = np.isfinite(s)
        r, c, s = r[ok], c[ok], s[ok]
        order = np.lexsort((items[c], -s, r))
        r, c, s = r[order], c[order], s[order]
        first = np.searchsorted(r, r, side="left")  # start of each row's run (r is sorted)
        rank_in_row = np.arange(len(r)) - first + 1
        top = rank_in_row <= kk
        parts.append((users[start:stop][r[top]], items[c[top]], s[top], rank_in_row[top]))
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(4))
