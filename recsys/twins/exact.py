"""Movie twins, exact: the true top pairs by Jaccard of rated-movie sets, and recall against them.

:func:`exact_top_pairs` is the ``exact`` method, made for full scale. Every user's set is
replicated to ``tasks`` groups (a cross join with the task ids, hash-partitioned on keys chosen
so that partition ``t`` holds task ``t``'s copy alone), and each group runs the compiled
AllPairs/PPJoin kernel of :mod:`recsys.twins.allpairs` in ``mapInArrow``: task ``t`` probes the users of
rank ``t, t + tasks, ...`` against an inverted index of every set, with size, prefix and
positional filters above a floor that starts at the k-th Jaccard of a seeded sample of users
and rises with the task's own top list. Each task returns its top ``n_pairs`` rows; the union
is de-duplicated and ranked in Spark, and only ``n_pairs`` rows reach the driver.

Why this is exact (the full proof is in :mod:`recsys.twins.allpairs`): a task prunes a pair only
when an upper bound of its Jaccard is strictly below the task's floor, and that floor is the
k-th best of real, distinct pairs the task has scored, so it never exceeds the true k-th value;
every pair with a shared movie is owned by exactly one task (or by the shared sample), and a
pair of the global top k is in the top k of whichever task owns it.

Cost: each task holds the whole data set once (4 bytes per rating for the sorted sets, about 8
more for the index: ~0.6 GB of Python-worker memory at ml-latest's 33.8M ratings) and repeats
the O(ratings) preparation; the probing, which dominates, is split ``tasks`` ways. The shuffle
sends every set to every task (``tasks`` x the sets' size). Spark Connect compatible: public
DataFrame APIs only, no broadcast variables.

:func:`exact_scored_pairs` scores every co-rated pair with a self-join on the movie (``sum over
movies of raters^2 / 2`` rows): a brute-force reference for small data and tests.
"""

from __future__ import annotations

import json

from recsys.core.errors import RecsysError
from recsys.twins.candidates import UserSets, jaccard_column, with_sizes

#: Users whose pairs every task scores first, to start from a floor witnessed by real pairs.
SAMPLE_USERS = 256
PAIR_COLUMNS = ("userA", "userB", "size_a", "size_b", "common", "jaccard")
_TASK_SCHEMA = ("task int, userA long, userB long, size_a int, size_b int, common int, "
                "jaccard double, stats string")


def default_tasks(spark) -> int:
    """How many tasks Spark runs at once (partitions of a default ``spark.range``), found without
    the classic-only SparkContext, so it also works over Spark Connect."""
    from pyspark.sql import functions as F

    return int(spark.range(1 << 16).select(F.spark_partition_id().alias("p")).distinct().count())


def _one_task(table, task: int, n_pairs: int, tasks: int, seed: int):
    """One task's top list as an Arrow table (+ a last row of JSON counters)."""
    import time

    import numpy as np
    import pyarrow as pa

    from recsys.twins.allpairs import task_top_k

    started = time.perf_counter()
    items = table.column("items").combine_chunks()
    offsets = items.offsets.to_numpy().astype(np.int64)
    tokens = items.values.to_numpy()[offsets[0]:offsets[-1]].astype(np.int32, copy=False)
    result = task_top_k(table.column("user").to_numpy().astype(np.int64), offsets - offsets[0], tokens,
                        k=n_pairs, n_tasks=tasks, task=task, sample_size=SAMPLE_USERS, seed=seed)
    stats = {**result.counters, "rows": table.num_rows, "entries": int(tokens.size),
             "seconds": time.perf_counter() - started}
    pairs = result.pairs
    m = len(pairs["userA"])
    columns = {"task": pa.array(np.full(m + 1, task), pa.int32())}
    for name, kind in zip(PAIR_COLUMNS, (pa.int64(), pa.int64(), pa.int32(), pa.int32(), pa.int32(),
                                         pa.float64()), strict=True):
        columns[name] = pa.array(list(pairs[name]) + [None], kind)  # the last row carries the stats
    columns["stats"] = pa.array([None] * m + [json.dumps(stats, default=float)], pa.string())
    return pa.table(columns)


def _task_top(n_pairs: int, tasks: int, seed: int):
    """The ``mapInArrow`` function: the top list of every task whose copy of the sets is in this
    partition (one; several would each get their own list)."""

    def run(batches):
        import pyarrow as pa
        import pyarrow.compute as pc

        batches = list(batches)
        if not batches:
            return
        table = pa.Table.from_batches(batches)
        for task in pc.unique(table.column("task")).to_pylist():
            part = table.filter(pc.equal(table.column("task"), task))
            yield from _one_task(part, int(task), n_pairs, tasks, seed).to_batches()

    return run


def exact_top_pairs(user_sets_: UserSets, n_pairs: int, seed: int = 0,
                    tasks: int = 0) -> tuple[list[dict], dict]:
    """The exact top ``n_pairs`` (Jaccard descending, then userA, then userB ascending) of the
    kept users' pairs that share at least one movie, and the kernel's counters summed over tasks
    (``tasks``, ``probes``, ``candidates``, ``verified``, ``floor0``: the sample's floor,
    ``final_floor``: the highest task floor, ``task_seconds_max``, ``movies``: distinct movies
    of the kept users).

    ``tasks``: how many groups run the kernel (0: :func:`default_tasks`). ``seed`` picks the
    sample of users that sets the first floor; it changes the work, never the result.
    """
    from pyspark.sql import functions as F

    if n_pairs < 1:
        raise RecsysError(f"n_pairs must be >= 1, got {n_pairs}")
    sets = user_sets_.sets
    spark = sets.sparkSession
    tasks = int(tasks) or default_tasks(spark)
    # Partition t must hold task t's copy alone, or the tasks run one after the other: a groupBy's
    # shuffle may be coalesced by adaptive execution, and a range partitioning of a few task ids
    # (bounds from a sample) or a union of coalesce(1) copies put two copies in one partition.
    # repartition(tasks, key) is never coalesced and sends key k to pmod(hash(k), tasks): each
    # task gets the smallest key that lands in its own partition.
    keys = {r["p"]: r["k"] for r in spark.range(64 * tasks)
            .select(F.col("id").alias("k"), F.pmod(F.hash("id"), F.lit(tasks)).alias("p"))
            .groupBy("p").agg(F.min("k").alias("k")).collect()}  # <= tasks rows
    groups = spark.createDataFrame([(t, keys.get(t, t)) for t in range(tasks)], "task int, key long")
    per_task = (sets.select(F.col("user").cast("long").alias("user"), "items").crossJoin(groups)
                .repartition(tasks, "key").drop("key")
                .mapInArrow(_task_top(n_pairs, tasks, seed), _TASK_SCHEMA))
    rows = (per_task.select(*PAIR_COLUMNS, "stats")
            .dropDuplicates(["userA", "userB", "stats"])  # the sample's pairs come from every task
            .orderBy(F.col("stats").isNull(), F.col("jaccard").desc(), "userA", "userB")
            .limit(n_pairs + tasks).collect())  # the stats rows sort first: tasks + n_pairs rows at most
    stats = [json.loads(r["stats"]) for r in rows if r["stats"] is not None]
    top = [{name: r[name] for name in PAIR_COLUMNS} for r in rows if r["stats"] is None][:n_pairs]
    summary = {"tasks": tasks, "floor0": min(s["floor0"] for s in stats),
               "final_floor": max(s["final_floor"] for s in stats),
               "task_seconds_max": max(s["seconds"] for s in stats), "movies": stats[0]["movies"]}
    for name in ("probes", "entries_scanned", "candidates", "verified"):
        summary[name] = sum(int(s[name]) for s in stats)
    return top, summary


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


def recall(found: list[dict], truth: list[dict]) -> float:
    """Share of the true top pairs that ``found`` contains (1.0 when ``truth`` is empty)."""
    if not truth:
        return 1.0
    wanted = {(t["userA"], t["userB"]) for t in truth}
    return len(wanted & {(f["userA"], f["userB"]) for f in found}) / len(wanted)
