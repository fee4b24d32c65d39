"""Batch top-K lists for every user of a factor model, and the reader of a users file.

:func:`recommend_all` gives each requested user the ``k`` best movies they did not rate
(``seen``), by the model's dot-product scores, through :func:`recsys.evaluation.topk.top_k_unseen` (one
blocked users x movies pass inside Spark; see its module docstring for the split of the work
and its cost). Users the model has no factors for (cold start) get the popularity list
instead, minus their own seen movies, and are counted. Nothing that grows with the data is
collected to the driver: only counts, the largest seen count among unknown users, and the
popularity list's first ``k + that`` rows (broadcast to the unknown users).

:func:`read_users` reads the optional list of users to recommend for: a text file (local path,
``file://`` or any Hadoop URI) with one user id per line, or a CSV whose header has a
``userId`` column. Blank lines are skipped; anything else that is not a user id is an error
naming the file and the line.
"""

from __future__ import annotations

import json
import os
import re

from recsys.core import fs
from recsys.core.constants import DEFAULT_RELEVANCE_THRESHOLD, ITEM_COL, RANK_COL, SCORE_COL, USER_COL
from recsys.core.errors import RecsysError
from recsys.core.progress import Progress, quiet
from recsys.evaluation.protocol import check_eval_params
from recsys.evaluation.topk import top_k_unseen

#: Columns (and their order) of :func:`recommend_all`'s output.
OUTPUT_COLUMNS = (USER_COL, RANK_COL, ITEM_COL, SCORE_COL)
#: MovieLens ids are positive and fit Spark's ``int`` (the factor tables' id type).
MAX_ID = 2**31 - 1
#: Bad lines quoted in a users-file error.
SHOWN_BAD_LINES = 5


def recommend_all(user_factors, item_factors, seen, k, *, users=None, popular=None,
                  progress: Progress = quiet):
    """Top ``k`` unseen movies for every user (or every user of ``users``).

    ``user_factors`` / ``item_factors``: ``DataFrame[id int, features array<float>]`` whose dot
    product is the score (``ALSModel.userFactors`` / ``itemFactors``). ``seen``:
    ``DataFrame[userId, movieId]`` (the training ratings), never recommended back.
    ``users``: optional ``DataFrame[userId]`` (duplicates ignored); default every user with
    factors. A user of ``users`` without factors gets the popularity list: ``popular`` is a
    ``DataFrame[movieId, score]`` (ranked by score descending, then movieId), or a fitted
    :class:`~recsys.models.popularity.PopularityRecommender`; ``None`` ranks movies by their
    number of ``seen`` pairs (popularity by count on the training data).

    Returns ``(recommendations, counts)``: a lazy ``DataFrame[userId int, rank int, movieId
    int, score double]`` (rank 1..k; fewer rows for a user with fewer than ``k`` unseen movies;
    order within a user: score descending, then movieId), and ``{"users": known + unknown,
    "known_users", "unknown_users", "movies"}`` (``movies``: movies with factors).
    """
    from pyspark.sql import functions as F

    k, _ = check_eval_params(k, DEFAULT_RELEVANCE_THRESHOLD)
    seen = seen.select(F.col(USER_COL).cast("int").alias(USER_COL),
                       F.col(ITEM_COL).cast("int").alias(ITEM_COL))
    sizes: dict = {}
    known = top_k_unseen(user_factors, item_factors, seen, k, users=users, progress=progress, counts=sizes)
    known = known.select(*(_typed(c) for c in OUTPUT_COLUMNS))
    counts = {"known_users": sizes["users"], "unknown_users": 0, "movies": sizes["movies"]}
    if users is not None:
        wanted = (users.select(F.col(USER_COL).cast("int").alias(USER_COL))
                  .filter(F.col(USER_COL).isNotNull()).distinct())
        with_factors = user_factors.select(F.col("id").cast("int").alias(USER_COL))
        unknown = wanted.join(with_factors, USER_COL, "left_anti")
        counts["unknown_users"] = unknown.count()
        if counts["unknown_users"]:
            progress(f"[recommend] {counts['unknown_users']} user(s) without factors get the popularity list")
            known = known.unionByName(_popular_for(unknown, seen, popular, k))
    counts["users"] = counts["known_users"] + counts["unknown_users"]
    return known, counts


def _typed(name: str):
    from pyspark.sql import functions as F

    kind = "double" if name == SCORE_COL else "int"
    return F.col(name).cast(kind).alias(name)


def _popular_list(popular, seen, n: int):
    """The first ``n`` rows of the popularity ranking: ``DataFrame[movieId, score]`` (small)."""
    from pyspark.sql import functions as F

    if popular is None:
        ranked = seen.groupBy(ITEM_COL).agg(F.count(F.lit(1)).cast("double").alias(SCORE_COL))
    elif hasattr(popular, "ranking"):  # a PopularityRecommender
        ranked = popular.ranking(n).select(ITEM_COL, SCORE_COL)
    else:
        missing = [c for c in (ITEM_COL, SCORE_COL) if c not in popular.columns]
        if missing:
            raise RecsysError(f"popular: missing column(s) {', '.join(missing)}; expected "
                              f"DataFrame[{ITEM_COL}, {SCORE_COL}] or a PopularityRecommender")
        ranked = popular.select(ITEM_COL, SCORE_COL)
    return (ranked.select(F.col(ITEM_COL).cast("int").alias(ITEM_COL),
                          F.col(SCORE_COL).cast("double").alias(SCORE_COL))
            .orderBy(F.col(SCORE_COL).desc(), F.col(ITEM_COL).asc()).limit(n))


def _popular_for(unknown, seen, popular, k: int):
    """The popularity list's top ``k`` unseen movies for each of the ``unknown`` users.

    A user who rated ``s`` movies loses at most ``s`` of the first ``k + s``: taking the
    largest ``s`` among these users keeps it exact (usually 0: ALS has factors for every user
    with a training rating).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    their_seen = seen.join(unknown, USER_COL, "left_semi")
    most = their_seen.groupBy(USER_COL).count().agg(F.max("count")).first()[0] or 0
    top = _popular_list(popular, seen, k + int(most))
    order = Window.partitionBy(USER_COL).orderBy(F.col(SCORE_COL).desc(), F.col(ITEM_COL).asc())
    cands = unknown.crossJoin(F.broadcast(top))  # top: at most k + most rows
    if most:
        cands = cands.join(their_seen, [USER_COL, ITEM_COL], "left_anti")
    return (cands.withColumn(RANK_COL, F.row_number().over(order)).filter(F.col(RANK_COL) <= k)
            .select(*(_typed(c) for c in OUTPUT_COLUMNS)))


# ---------------------------------------------------------------- users file


_ID = re.compile(r"[0-9]+")


def read_users(spark, path: str):
    """``DataFrame[userId int]`` (distinct) of the user ids in ``path`` (see the module docstring).

    Raises :class:`RecsysError` naming ``path`` when it is missing or empty, when its first line
    is neither an id nor a header with ``userId``, and, for bad ids, naming the first few lines
    (1-based, as an editor shows them) and their text. Validation runs in Spark; the line
    numbers are computed only when something is wrong.
    """
    from pyspark.sql import functions as F

    from recsys.core import fs

    if not path or not str(path).strip():
        raise RecsysError("users: give a file of user ids (one per line, or a CSV with a userId column)")
    path = str(path).strip()
    if not fs.exists(spark, path):
        raise RecsysError(f"users file {path} does not exist")
    if fs.is_dir(spark, path):
        raise RecsysError(f"users file {path} is a directory; give one file of user ids")
    first = fs.read_first_line(spark, path)
    if first is None or not first.strip():
        raise RecsysError(f"users file {path} is empty (line 1): expected one user id per line, "
                          f"or a CSV header with a {USER_COL} column")
    header = [h.strip().strip('"').strip() for h in first.lstrip("\ufeff").split(",")]
    column = header.index(USER_COL) if USER_COL in header else None
    if column is None and not _ID.fullmatch(header[0] if len(header) == 1 else ""):
        raise RecsysError(f"users file {path}, line 1: {first[:80]!r} is neither a user id nor a CSV "
                          f"header with a {USER_COL} column")

    lines = spark.read.text(fs.to_uri(path))
    raw = F.col("value")
    if column is not None:
        raw = F.split(raw, ",").getItem(column)
    text = F.trim(F.regexp_replace(raw, '"', ""))
    values = lines.select(F.col("value").alias("_line"), text.alias("_id"))
    if column is not None:
        values = values.filter(F.col("_line") != F.lit(first))
    values = values.filter(F.trim(F.col("_line")) != "")
    # a bad id: not all digits, 0, or too large for an int (digits compared as strings by length)
    digits = F.coalesce(F.col("_id").rlike(r"^[0-9]+$"), F.lit(False))  # null: a CSV row without the column
    number = F.col("_id").try_cast("long")  # ANSI mode: a plain cast of "x7" raises
    too_big = (F.length(F.col("_id")) > 10) | (number > F.lit(MAX_ID))
    bad = ~digits | too_big | (number == 0)
    checked = values.select("_id", bad.alias("_bad")).cache()
    found = checked.agg(F.count(F.when(F.col("_bad"), 1)).alias("bad"), F.count(F.lit(1)).alias("n")).first()
    if found["bad"]:
        checked.unpersist()
        raise RecsysError(_bad_lines_message(spark, path, column))
    if found["n"] == 0:
        checked.unpersist()
        raise RecsysError(f"users file {path} holds no user ids (only a header or blank lines)")
    return checked.select(F.col("_id").cast("int").alias(USER_COL)).distinct()


def _bad_lines_message(spark, path: str, column) -> str:
    """The error text for a users file with bad ids: the first few bad lines, numbered."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from recsys.core import fs
    from recsys.core.spark import numbered_lines

    def is_bad(line: str, number: int) -> bool:
        if not line.strip() or (column is not None and number == 1):
            return False
        if column is not None:
            cells = line.split(",")
            value = cells[column].strip().strip('"').strip() if column < len(cells) else ""
        else:
            value = line.strip()
        return not (value.isascii() and value.isdigit() and 0 < int(value) <= MAX_ID)

    lines = numbered_lines(spark, fs.to_uri(path))
    flagged = lines.where(F.udf(is_bad, T.BooleanType())("_text", "_line"))
    bad = [(r["_text"], r["_line"] - 1) for r in flagged.orderBy("_line").limit(SHOWN_BAD_LINES).collect()]
    shown = "; ".join(f"line {index + 1}: {line[:60]!r}" for line, index in bad)
    what = f"the {USER_COL} column" if column is not None else "each line"
    return (f"users file {path}: {what} must hold a user id (an integer 1..{MAX_ID}); bad: {shown}"
            + (" (first few shown)" if len(bad) == SHOWN_BAD_LINES else ""))


# ---------------------------------------------------------------- the written lists

#: Written inside the output next to the Parquet files; "_" makes Spark's readers skip it.
RECOMMENDATIONS_MANIFEST = "_recsys_recommendations.json"
#: Users whose lists a job shows as a sample.
SAMPLE_USERS = 100


def read_lists_manifest(spark, output: str) -> dict | None:
    """The manifest of recommendations already at ``output``; None when there are none. Anything
    else at ``output`` is an error: a job never writes over what it did not make."""
    found = fs.read_text_or_none(spark, fs.join(output, RECOMMENDATIONS_MANIFEST))
    if found is not None:  # (or its previous copy, if an update was killed: see fs.write_text)
        return json.loads(found)
    if fs.exists(spark, output):
        raise RecsysError(f"output {output} exists and is not a recsys recommendations directory "
                          f"(no {RECOMMENDATIONS_MANIFEST}); delete it or choose another output")
    return None


def write_lists(spark, recs, output: str, manifest: dict, progress: Progress = quiet) -> None:
    """Write ``recs`` (Parquet, sorted by user and rank within each file) and ``manifest`` to
    ``output`` through a temporary sibling renamed into place: a killed job leaves no
    ``output`` that looks complete (its temporary sibling is removed by the next run)."""
    fs.remove_stale_temps(spark, output, what="recommend", progress=progress)
    tmp_out = fs.temp_dir_name(output)
    recs.sortWithinPartitions(USER_COL, RANK_COL).write.parquet(fs.to_uri(tmp_out))
    fs.write_text(spark, fs.join(tmp_out, RECOMMENDATIONS_MANIFEST), json.dumps(manifest, indent=2))
    if fs.is_local(output):
        os.makedirs(os.path.dirname(fs.local_path(output)), exist_ok=True)
    fs.rename(spark, tmp_out, output)


def update_lists_manifest(spark, output: str, manifest: dict) -> None:
    fs.write_text(spark, fs.join(output, RECOMMENDATIONS_MANIFEST), json.dumps(manifest, indent=2))


def list_sample(spark, output: str, movies=None, n_users: int = SAMPLE_USERS):
    """The lists at ``output`` of its ``n_users`` smallest user ids, as pandas (at most
    ``n_users x k`` rows), with ``title`` and ``genres`` from ``movies`` (empty without it)."""
    from pyspark.sql import functions as F

    recs = spark.read.parquet(fs.to_uri(output))
    first = recs.select(USER_COL).distinct().orderBy(USER_COL).limit(n_users)
    sample = recs.join(F.broadcast(first), USER_COL, "left_semi")
    if movies is not None:
        sample = sample.join(movies.select(ITEM_COL, "title", "genres"), ITEM_COL, "left")
    else:
        sample = sample.withColumn("title", F.lit(None).cast("string")).withColumn("genres", F.lit(None))
    return (sample.select(USER_COL, RANK_COL, ITEM_COL, SCORE_COL, "title", "genres")
            .orderBy(USER_COL, RANK_COL).toPandas())
