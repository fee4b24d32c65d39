"""Export a fitted ALS model as the NumPy arrays the served recommender reads
(``recsys/recommend/serving.py``).

The served model *is* these arrays, so collecting the factors to the driver is inherent here:
``users x rank + movies x rank`` float32 (331k users x 86.5k movies x rank 64: 85 MB + 22 MB),
plus the seen pairs as CSR (4 bytes a pair: 135 MB for 33.8M ratings). Everything is streamed
with ``toLocalIterator`` (the driver holds one partition at a time, never one ``toPandas()`` of
the pairs) into arrays preallocated from a count taken first, then written with ``np.save``.
Spark work: one count and one pass over each factor table (no sort: ids are sorted on the
driver), and one ``groupBy(userId)`` + sort of the training pairs.

Layout of ``out_dir`` (every ``.npy`` is a plain array: ``np.load`` needs no pickle):

=========================  ===============================================================
``meta.json``              ``format`` (1), ``kind``, ``feedback``, ``rank``, ``n_users``,
                           ``n_movies``, ``n_seen_pairs``, ``n_popular``, ``global_mean``,
                           ``min_rating``, ``max_rating`` (rating only, else null),
                           ``als_config``, ``files`` (name -> dtype, shape), ``created``,
                           ``skipped`` (pairs without factors), plus the caller's ``meta``
``user_ids.npy``           int32 [users], sorted ascending: row ``i`` of ``user_factors``
``user_factors.npy``       float32 [users, rank]
``item_ids.npy``           int32 [movies], sorted ascending: row ``j`` of ``item_factors``
``item_factors.npy``       float32 [movies, rank]
``seen_indptr.npy``        int64 [users + 1]: user ``i``'s training movies are
``seen_indices.npy``       int32 [pairs] ``seen_indices[indptr[i]:indptr[i+1]]`` (item
                           positions, ascending)
``popular_ids.npy``        int32 [<= 1000]: the cold-start list, best first
``popular_scores.npy``     float64 [<= 1000]: its popularity scores (training rating counts)
``titles.json``            ``{"movieId": [...ascending], "title": [...]}`` for every movie above
                           that ``movies`` names (omitted without ``movies``)
``bias_user_ids.npy``,     kind ``rating`` only: the fallback's offsets, ids ascending
``bias_user.npy``,         (int32 / float64); an unknown pair is scored
``bias_item_ids.npy``,     ``clip(global_mean + b_user + b_movie)``, offset 0 when unknown
``bias_item.npy``
=========================  ===============================================================

The directory is written next to ``out_dir`` under a temporary name and renamed into place, so
``out_dir`` either does not exist or is complete.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid

import numpy as np

from recsys.core.constants import ITEM_COL, MAX_RATING, MIN_RATING, RANK_COL, SCORE_COL, USER_COL
from recsys.core.errors import RecsysError
from recsys.core.progress import Progress, quiet

#: Version of the layout above; ``serving.py`` refuses a format it does not know.
FORMAT = 1
KINDS = ("ranking", "rating")
#: Length of the stored cold-start list (also the largest ``k`` a request may ask for).
POPULAR_N = 1000
META_FILE = "meta.json"
#: Keys ``export_factors`` writes itself. The caller's ``meta`` may repeat ``kind`` and ``feedback``
#: with the same value (a job passes what it asked for); any other clash is refused.
RESERVED_META = ("format", "kind", "feedback", "rank", "n_users", "n_movies", "n_seen_pairs",
                 "n_popular", "global_mean", "min_rating", "max_rating", "als_config", "files",
                 "created", "skipped")
_ROWS_PER_BATCH = 4096
#: Target size of one streamed partition of factors (the driver holds one at a time).
STREAM_PART_BYTES = 64 << 20


def export_factors(recommender, train, out_dir, *, kind, popularity, movies=None, fallback=None,
                   meta=None, progress: Progress = quiet) -> dict:
    """Write the arrays of a fitted ALS model to the local directory ``out_dir`` (layout above).

    ``recommender``: a fitted :class:`~recsys.models.als.ALSRecommender` (its ``factors()``; in
    explicit mode with biases those already include the bias terms). ``train``: the training
    ratings ``DataFrame[userId, movieId, ...]``, whose distinct pairs become the seen set that
    top-K lists exclude. ``kind``: ``"ranking"`` (scores are the raw dot products; an unknown
    pair scores 0.0) or ``"rating"`` (an explicit model: scores are ratings clipped to
    0.5..5; an unknown pair gets the bias baseline of ``fallback``, a fitted
    :class:`~recsys.models.bias.BiasBaseline`, which is then required). ``popularity``: a fitted
    :class:`~recsys.models.popularity.PopularityRecommender`; its top 1000 are the cold-start
    list. ``movies``: optional ``DataFrame[movieId, title, ...]`` (catalogue-sized, collected)
    for titles. ``meta``: JSON-able fields added to ``meta.json`` (keys must not clash with
    ``RESERVED_META``, except ``kind`` / ``feedback`` given the same value). ``progress``:
    optional callable given one line per step.

    Returns counts: ``users``, ``movies``, ``rank``, ``seen_pairs``, ``popular``, ``titles``,
    ``bytes`` (written), ``seconds``, and ``seen_skipped`` (training pairs whose user or movie
    has no factors, which cannot happen when the model was fitted on ``train``).
    Raises :class:`~recsys.errors.RecsysError` naming the parameter for bad arguments, and
    when ``out_dir`` already exists.
    """
    start = time.time()
    if kind not in KINDS:
        raise RecsysError(f"kind={kind!r} is unknown; allowed: {', '.join(KINDS)}")
    config = getattr(recommender, "config", None)
    if getattr(recommender, "model", None) is None or config is None:
        raise RecsysError("export_factors: recommender must be a fitted ALSRecommender")
    if kind == "rating":
        if config.implicit_prefs:
            raise RecsysError("kind='rating' needs an explicit-feedback model; this one is implicit "
                              "(its scores are preferences): use kind='ranking'")
        if fallback is None or getattr(fallback, "global_mean", None) is None:
            raise RecsysError("kind='rating' needs fallback=<a fitted BiasBaseline> for unknown pairs")
    if popularity is None or getattr(popularity, "items", None) is None:
        raise RecsysError("popularity must be a fitted PopularityRecommender (the cold-start list)")
    if movies is not None and not {ITEM_COL, "title"} <= set(movies.columns):
        raise RecsysError(f"movies must have columns {ITEM_COL} and title; it has {movies.columns}")
    extra = dict(meta or {})
    known = {"kind": kind, "feedback": config.feedback}
    clash = sorted(key for key in set(extra) & set(RESERVED_META)
                   if key not in known or extra[key] != known[key])
    if clash:
        raise RecsysError(f"meta keys {clash} are reserved (written by export_factors; kind and feedback "
                          f"may only repeat {known}); rename them")
    out_dir = os.path.abspath(os.fspath(out_dir))
    if os.path.exists(out_dir):
        raise RecsysError(f"out_dir {out_dir} already exists; give a new directory")
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(out_dir)}.tmp-{uuid.uuid4().hex[:8]}")
    os.makedirs(tmp)
    try:
        counts = _write_all(tmp, recommender, train, kind=kind, popularity=popularity, movies=movies,
                            fallback=fallback, extra=extra, progress=progress)
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    counts["seconds"] = time.time() - start
    progress(f"[factors] {counts['users']} users x {counts['movies']} movies x rank {counts['rank']}, "
             f"{counts['seen_pairs']} seen pairs, {counts['bytes'] / 1e6:.1f} MB in {counts['seconds']:.1f}s "
             f"-> {out_dir}")
    return counts


def _write_all(tmp, recommender, train, *, kind, popularity, movies, fallback, extra, progress) -> dict:
    from pyspark.sql import functions as F

    rank = int(recommender.model.rank)
    user_df, item_df = recommender.factors()
    files: dict[str, dict] = {}

    def save(name: str, array: np.ndarray) -> None:
        np.save(os.path.join(tmp, name), array, allow_pickle=False)
        files[name] = {"dtype": str(array.dtype), "shape": list(array.shape)}

    progress("[factors] collecting user factors")
    user_ids, user_factors = _collect_factors(user_df, rank, "userFactors")
    progress("[factors] collecting item factors")
    item_ids, item_factors = _collect_factors(item_df, rank, "itemFactors")
    save("user_ids.npy", user_ids)
    save("user_factors.npy", user_factors)
    save("item_ids.npy", item_ids)
    save("item_factors.npy", item_factors)
    del user_factors, item_factors

    progress("[factors] collecting the seen pairs")
    indptr, indices, skipped = _collect_seen(train, user_ids, item_ids)
    save("seen_indptr.npy", indptr)
    save("seen_indices.npy", indices)
    n_seen = int(indices.shape[0])
    del indices

    # ranking() is ordered score desc, movieId asc; POPULAR_N rows
    top = popularity.ranking(POPULAR_N).orderBy(RANK_COL).select(
        F.col(ITEM_COL).cast("long"), F.col(SCORE_COL).cast("double")).collect()
    popular_ids = _as_int32(np.array([row[0] for row in top], dtype=np.int64), "popularity movieId")
    save("popular_ids.npy", popular_ids)
    save("popular_scores.npy", np.array([row[1] for row in top], dtype=np.float64))

    n_titles = 0
    if movies is not None:
        n_titles = _write_titles(tmp, movies, np.union1d(item_ids, popular_ids))
        files["titles.json"] = {"entries": n_titles}

    global_mean = None
    if kind == "rating":
        global_mean = float(fallback.global_mean)
        for side, table, key, value in (("user", fallback.user_bias, USER_COL, "user_bias"),
                                        ("item", fallback.item_bias, ITEM_COL, "item_bias")):
            ids, values = _collect_column(table, key, value)
            save(f"bias_{side}_ids.npy", ids)
            save(f"bias_{side}.npy", values)

    config = recommender.config
    info = {"format": FORMAT, "kind": kind, "feedback": config.feedback, "rank": rank,
            "n_users": int(user_ids.shape[0]), "n_movies": int(item_ids.shape[0]),
            "n_seen_pairs": n_seen, "n_popular": int(popular_ids.shape[0]),
            "global_mean": global_mean,
            "min_rating": MIN_RATING if kind == "rating" else None,
            "max_rating": MAX_RATING if kind == "rating" else None,
            "als_config": config.as_params(), "files": files,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "skipped": skipped, **extra}
    with open(os.path.join(tmp, META_FILE), "w", encoding="utf-8") as fh:
        json.dump(info, fh, indent=2, sort_keys=True, default=str)
    written = sum(os.path.getsize(os.path.join(tmp, name)) for name in os.listdir(tmp))
    return {"users": info["n_users"], "movies": info["n_movies"], "rank": rank, "seen_pairs": n_seen,
            "popular": info["n_popular"], "titles": n_titles, "seen_skipped": skipped["pairs"],
            "bytes": written}


def _as_int32(ids: np.ndarray, what: str) -> np.ndarray:
    if ids.size and (ids.min() < np.iinfo(np.int32).min or ids.max() > np.iinfo(np.int32).max):
        raise RecsysError(f"{what}: ids outside the int32 range (Spark ALS ids are int)")
    return ids.astype(np.int32)


def _check_sorted(ids: np.ndarray, what: str) -> None:
    if ids.size > 1 and not bool(np.all(ids[1:] > ids[:-1])):
        raise RecsysError(f"{what}: ids are not unique (the same id appears twice)")


def _stream(df, row_bytes: int):
    """``df.toLocalIterator()`` over at most ``ceil(rows * row_bytes / STREAM_PART_BYTES)``
    partitions: each partition is one Spark job, and the driver holds one at a time."""
    import math

    n = int(df.count())
    # coalesce never adds partitions: a table with fewer keeps its own
    parts = max(1, math.ceil(n * row_bytes / STREAM_PART_BYTES))
    return n, df.coalesce(parts).toLocalIterator()


def _collect_sorted(rows, n: int, values, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Fill int32 ids and ``values`` (preallocated, ``n`` rows) from ``(id, value)`` rows batch by
    batch, then sort both by id. Sorted here, not in Spark (a sort there is one more sampling job
    and a shuffle); the permutation costs one temporary copy of the values."""
    ids = np.empty(n, dtype=np.int32)
    filled = 0
    for batch in _batches(rows):
        if filled + len(batch) > n:
            raise RecsysError(f"{what}: more rows than counted ({n}); was the model changed meanwhile?")
        ids[filled:filled + len(batch)] = [row[0] for row in batch]
        try:
            values[filled:filled + len(batch)] = [row[1] for row in batch]
        except ValueError as err:
            raise RecsysError(f"{what}: a value does not fit {values.dtype} x {values.shape[1:]}") from err
        filled += len(batch)
    if filled != n:
        raise RecsysError(f"{what}: {filled} rows read, {n} counted")
    order = np.argsort(ids, kind="stable")
    ids, values = ids[order], values[order]
    _check_sorted(ids, what)
    return ids, values


def _collect_factors(df, rank: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """``DataFrame[id, features array<float>]`` -> (int32 ids ascending, float32 [n, rank])."""
    from pyspark.sql import functions as F

    n, rows = _stream(df.select(F.col("id").cast("int"), "features"), 4 * rank + 8)
    ids, factors = _collect_sorted(rows, n, np.empty((n, rank), dtype=np.float32), f"{what} (rank {rank})")
    if not np.all(np.isfinite(factors)):
        raise RecsysError(f"{what}: factors contain NaN or infinity")
    return ids, factors


def _collect_seen(train, user_ids: np.ndarray, item_ids: np.ndarray):
    """The distinct training pairs as CSR over user positions: (indptr int64, indices int32, skipped).

    One row per user (its sorted distinct movies as an array) streamed in userId order, so CSR
    rows are filled one after another into an array preallocated to ``train.count()`` (an upper
    bound: a pair rated twice counts once) and the driver holds one partition of users at a
    time. Users or movies without factors are left out and counted in ``skipped``: nothing can
    be excluded for them (none when the model was fitted on ``train``).
    """
    from pyspark.sql import functions as F

    upper = int(train.count())
    indices = np.empty(upper, dtype=np.int32)
    lengths = np.zeros(user_ids.shape[0], dtype=np.int64)
    skipped = {"users": 0, "pairs": 0}
    rows = (train.select(F.col(USER_COL).cast("int").alias("u"), F.col(ITEM_COL).cast("int").alias("i"))
            .groupBy("u").agg(F.array_sort(F.collect_set("i")).alias("items"))
            .orderBy("u").toLocalIterator())
    filled = 0
    for batch in _batches(rows):
        users = np.array([row[0] for row in batch], dtype=np.int64)
        sizes = np.array([len(row[1]) for row in batch], dtype=np.int64)
        movies = np.fromiter((m for row in batch for m in row[1]), dtype=np.int64, count=int(sizes.sum()))
        owner = np.repeat(np.arange(len(batch)), sizes)
        upos, ufound = _positions(user_ids, users)
        ipos, ifound = _positions(item_ids, movies)
        keep = ufound[owner] & ifound
        skipped["users"] += int((~ufound).sum())
        skipped["pairs"] += int((~keep).sum())
        kept = ipos[keep]
        if filled + kept.shape[0] > upper:
            raise RecsysError(f"train: more distinct pairs than rows ({upper}); is train deterministic?")
        # users arrive in ascending order, as their positions do: CSR rows fill in sequence
        indices[filled:filled + kept.shape[0]] = kept
        filled += kept.shape[0]
        lengths[upos[ufound]] = np.bincount(owner[keep], minlength=len(batch))[ufound]
    indptr = np.zeros(user_ids.shape[0] + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    if indptr[-1] != filled:
        raise RecsysError("train: the seen pairs did not arrive in userId order")
    return indptr, indices[:filled], skipped


def _positions(sorted_ids: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``ids`` in ``sorted_ids`` and whether each is there."""
    if sorted_ids.shape[0] == 0:
        return np.zeros(ids.shape[0], dtype=np.int64), np.zeros(ids.shape[0], dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_ids, ids), sorted_ids.shape[0] - 1)
    return pos, sorted_ids[pos] == ids


def _collect_column(table, key: str, value: str) -> tuple[np.ndarray, np.ndarray]:
    """``table[key int, value double]`` (one row per key) -> (int32 keys ascending, float64 values)."""
    from pyspark.sql import functions as F

    n, rows = _stream(table.select(F.col(key).cast("int"), F.col(value).cast("double")), 16)
    return _collect_sorted(rows, n, np.empty(n, dtype=np.float64), value)


def _write_titles(tmp: str, movies, wanted: np.ndarray) -> int:
    """``titles.json`` for the movies in ``wanted`` that ``movies`` names; returns their count."""
    from pyspark.sql import functions as F

    table = movies.select(F.col(ITEM_COL).cast("long"), F.col("title").cast("string")).toPandas()
    table = table.dropna().drop_duplicates(ITEM_COL).sort_values(ITEM_COL)
    table = table[table[ITEM_COL].isin(wanted)]
    with open(os.path.join(tmp, "titles.json"), "w", encoding="utf-8") as fh:
        json.dump({"movieId": [int(m) for m in table[ITEM_COL]], "title": list(table["title"])}, fh,
                  ensure_ascii=False)
    return int(table.shape[0])


def _batches(rows, size: int = _ROWS_PER_BATCH):
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
