"""Banded MinHash candidates scored without a join: most are ruled out by their signatures.

Scoring every candidate exactly in Spark (join both users' movie arrays, intersect) ran at about
58k pairs/s at ml-latest's size: 70.5M candidates took 1,218 s. Here the candidates are
hash-partitioned into ``tasks`` groups, and each group is cogrouped with a copy of every kept
user's sorted movie indices and MinHash signature (``cogroup(...).applyInArrow``). A compiled
kernel then treats each candidate (a, b) in three steps, cheapest first:

1. **Sizes**: Jaccard <= min(size) / max(size), so a pair whose sizes cannot reach the floor
   ``f`` is dropped (integer comparison, as :func:`recsys.twins.candidates.sizes_can_reach`).
2. **Signatures**: the share of the ``H`` MinHash values two users agree on estimates their
   Jaccard ``J``, with standard deviation ``sqrt(J (1 - J) / H)``. A pair whose agreement is
   below ``H (f - z sqrt(f (1 - f) / H))`` (``z`` = :data:`MARGIN_SD` = 4) is dropped: for a
   pair with ``J >= f`` that happens with probability about ``Phi(-4) = 3e-5`` (binomial tail;
   MinHashLSH's hash family is only approximately min-wise, which the margin also absorbs).
   The price is that ``banded`` stays approximate: its recall against ``exact`` is measured.
3. **Exact**: the survivors' movie arrays are intersected (a merge of two sorted arrays), and
   the task keeps its top ``n_pairs`` by exact Jaccard. The union of the task lists, ranked in
   Spark, gives the top (the floor pairs found before are part of it).

``f`` is the ``n_pairs``-th Jaccard of the candidates met in the most bands, scored exactly
first (:func:`recsys.twins.candidates.top_candidates`), so it is witnessed by real pairs.
"""

from __future__ import annotations

import json
import math

import numpy as np
from numba import njit

from recsys.twins.candidates import MARGIN_SD, min_agreement

PAIR_COLUMNS = ("userA", "userB", "size_a", "size_b", "common", "jaccard")
_SCHEMA = ("userA long, userB long, size_a int, size_b int, common int, jaccard double, "
           "stats string")


@njit(cache=True, nogil=True)
def _score(rows_a, rows_b, sizes, sigs, offsets, items, floor_num, floor_den, min_agree, common):
    """For each candidate (row indices ``rows_a``, ``rows_b``): ``common[i]`` = its exact
    overlap, or -1 when the sizes or signatures rule it out. Returns (size-passed, sig-passed)."""
    n_hashes = sigs.shape[1]
    by_size = by_sig = 0
    for i in range(rows_a.shape[0]):
        a, b = rows_a[i], rows_b[i]
        sa, sb = sizes[a], sizes[b]
        small, large = (sa, sb) if sa <= sb else (sb, sa)
        common[i] = -1
        if small * floor_den < floor_num * large:  # min/max < floor (exact integers)
            continue
        by_size += 1
        agree = 0
        for h in range(n_hashes):
            if sigs[a, h] == sigs[b, h]:
                agree += 1
        if agree < min_agree:
            continue
        by_sig += 1
        p, pe, q, qe, c = offsets[a], offsets[a + 1], offsets[b], offsets[b + 1], 0
        while p < pe and q < qe:
            if items[p] == items[q]:
                c += 1
                p += 1
                q += 1
            elif items[p] < items[q]:
                p += 1
            else:
                q += 1
        common[i] = c
    return by_size, by_sig


def _rational(value: float, limit: int = 1 << 20) -> tuple[int, int]:
    """A fraction at or below ``value`` (a floor may be lowered, never raised: pruning less is safe)."""
    num = math.floor(value * limit)
    return num, limit


def _task(n_pairs: int, floor: float, n_hashes: int, margin_sd: float):
    """The cogroup function: (candidates of one task, every user's items and signature)."""

    def run(candidates, users):
        import pyarrow as pa

        ids = users.column("user").to_numpy().astype(np.int64)
        order = np.argsort(ids, kind="stable")
        ids = ids[order]
        items_col = users.column("items").combine_chunks()
        raw_off = items_col.offsets.to_numpy().astype(np.int64)
        raw_items = items_col.values.to_numpy().astype(np.int32)
        sizes = np.diff(raw_off)[order].astype(np.int64)
        offsets = np.zeros(ids.size + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        items = np.concatenate([raw_items[raw_off[i]:raw_off[i + 1]] for i in order]) if ids.size \
            else np.zeros(0, np.int32)
        sig_col = users.column("sig").combine_chunks()
        sigs = sig_col.values.to_numpy().astype(np.int32).reshape(-1, n_hashes)[order]
        a = candidates.column("userA").to_numpy().astype(np.int64)
        b = candidates.column("userB").to_numpy().astype(np.int64)
        rows_a, rows_b = np.searchsorted(ids, a), np.searchsorted(ids, b)
        common = np.empty(a.size, dtype=np.int64)
        num, den = _rational(floor)
        by_size, by_sig = _score(rows_a, rows_b, sizes, sigs, offsets, items, num, den,
                                 min_agreement(floor, n_hashes, margin_sd), common)
        keep = common >= 1
        a, b, c = a[keep], b[keep], common[keep]
        sa, sb = sizes[rows_a[keep]], sizes[rows_b[keep]]
        jaccard = c / (sa + sb - c)
        top = np.lexsort((b, a, -jaccard))[:n_pairs]
        stats = json.dumps({"candidates": int(keep.size), "size_passed": int(by_size),
                            "scored_exactly": int(by_sig)})
        m = top.size
        return pa.table({
            "userA": pa.array(list(a[top]) + [None], pa.int64()),
            "userB": pa.array(list(b[top]) + [None], pa.int64()),
            "size_a": pa.array(list(sa[top]) + [None], pa.int32()),
            "size_b": pa.array(list(sb[top]) + [None], pa.int32()),
            "common": pa.array(list(c[top]) + [None], pa.int32()),
            "jaccard": pa.array(list(jaccard[top]) + [None], pa.float64()),
            "stats": pa.array([None] * m + [stats], pa.string())})

    return run


def score_candidates(candidates, sets, sigs, n_pairs: int, floor: float, n_hashes: int, tasks: int,
                     margin_sd: float = MARGIN_SD) -> tuple[list[dict], dict]:
    """The top ``n_pairs`` of ``candidates`` (userA, userB) by exact Jaccard among those whose
    sizes and MinHash signatures (``sigs``: user, sig) can reach ``floor`` (see the module doc);
    ``(top, stats)`` with ``candidates``, ``size_passed`` and ``scored_exactly`` summed over tasks.
    Collects at most ``tasks + n_pairs`` rows."""
    from pyspark.sql import functions as F

    spark = sets.sparkSession
    groups = spark.range(tasks).select(F.col("id").cast("int").alias("task"))
    pairs = candidates.select("userA", "userB").withColumn(
        "task", F.pmod(F.xxhash64("userA", "userB"), F.lit(tasks)).cast("int"))
    users = (sets.select("user", "items").join(sigs, "user").crossJoin(groups)
             .repartitionByRange(tasks, "task"))
    scored = (pairs.groupBy("task").cogroup(users.groupBy("task"))
              .applyInArrow(_task(n_pairs, floor, n_hashes, margin_sd), _SCHEMA))
    rows = (scored.orderBy(F.col("stats").isNull(), F.col("jaccard").desc(), "userA", "userB")
            .limit(n_pairs + tasks).collect())
    counts = [json.loads(r["stats"]) for r in rows if r["stats"] is not None]
    stats = {key: sum(c[key] for c in counts) for key in ("candidates", "size_passed", "scored_exactly")}
    top = [{name: r[name] for name in PAIR_COLUMNS} for r in rows if r["stats"] is None][:n_pairs]
    return top, stats
