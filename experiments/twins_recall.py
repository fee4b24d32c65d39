"""Recall of the twins' top pairs against the exact top, the exact computed in blocks (issue 6).

    python experiments/twins_recall.py --data <release folder or zip> [--min-ratings 20] [--n-pairs 100]
        [--method banded|approx_join] [--n-hashes N]

1. ``find_twins`` with the twins entry point's defaults (MinHash banding, two-pass scoring) on
   the release, in a SparkSession of this process: its top ``n_pairs`` and its time. With
   ``--method approx_join --n-hashes 7`` the candidates come from Spark's
   ``approxSimilarityJoin`` instead (the benchmark's ``twins_approx`` stage).
2. The exact top ``n_pairs`` by Jaccard over *every* pair of kept users, with no floor and no
   filter: the kept users' movie sets as a sparse 0/1 matrix ``X`` (users x movies), and for
   each block of rows the intersection sizes ``X[block] @ X[block start:].T`` (scipy, one
   block at a time, so memory is bounded by the block's co-rated pairs). Jaccard is
   ``common / (size_a + size_b - common)``, in the same float64 arithmetic as Spark's, and ties
   are broken as the project's ``top_pairs`` does (userA, then userB, ascending).
3. The recall of (1) against (2), and both times.

The exact reference reads the release's ``ratings.csv`` into this process (10M ratings: about
80 MB of ids). That is a benchmark's reference on a local release; the project itself never
collects ratings to the driver. Spark's own exact route (``--compare-exact``, prefix filtering
above a floor) did not finish in 2,400 s at 10M ratings; this one is a sparse product whose
cost is the number of co-rating events, sum over movies of raters^2 / 2.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def read_pairs(release: str) -> tuple[np.ndarray, np.ndarray]:
    """(userId, movieId) arrays of a release's ratings.csv (folder, or zip with one ratings.csv)."""
    import pyarrow.csv as pcsv

    options = pcsv.ConvertOptions(include_columns=["userId", "movieId"])
    if os.path.isdir(release):
        table = pcsv.read_csv(os.path.join(release, "ratings.csv"), convert_options=options)
    else:
        with zipfile.ZipFile(release) as zf:
            [member] = [n for n in zf.namelist() if n.rsplit("/", 1)[-1] == "ratings.csv"]
            table = pcsv.read_csv(io.BytesIO(zf.read(member)), convert_options=options)
    return (table.column("userId").to_numpy().astype(np.int64),
            table.column("movieId").to_numpy().astype(np.int64))


def exact_top_blocked(users: np.ndarray, movies: np.ndarray, min_ratings: int, n_pairs: int,
                      block: int = 1000, progress=print) -> tuple[list[dict], dict]:
    """The exact top ``n_pairs`` (userA < userB, Jaccard descending, then userA, userB) among
    users with at least ``min_ratings`` distinct movies; ``(pairs, stats)``."""
    from scipy import sparse

    pairs = np.unique(np.stack([users, movies], axis=1), axis=0)  # distinct (user, movie)
    ids, inverse, counts = np.unique(pairs[:, 0], return_inverse=True, return_counts=True)
    keep = counts >= min_ratings
    rows = (np.cumsum(keep) - 1)[inverse]  # kept users re-indexed in ascending id order
    chosen = keep[inverse]
    kept_ids = ids[keep]
    _, cols = np.unique(pairs[chosen, 1], return_inverse=True)
    n = len(kept_ids)
    x = sparse.csr_matrix((np.ones(int(chosen.sum()), np.int32), (rows[chosen], cols)),
                          shape=(n, int(cols.max()) + 1 if n else 0))
    sizes = np.diff(x.indptr).astype(np.int64)
    raters = np.diff(x.tocsc().indptr).astype(np.float64)
    stats = {"users_kept": n, "co_rating_events": float((raters * (raters - 1)).sum() / 2), "pairs_scored": 0}
    progress(f"[exact] {n} users kept (>= {min_ratings} movies), {x.shape[1]} movies, "
             f"{stats['co_rating_events']:.3g} co-rating events; blocks of {block} users")
    best_j = np.empty(0)
    best_a = np.empty(0, np.int64)
    best_b = np.empty(0, np.int64)
    started = time.time()
    for start in range(0, n, block):
        stop = min(n, start + block)
        common = (x[start:stop] @ x[start:].T).tocoo()
        a = common.row.astype(np.int64) + start
        b = common.col.astype(np.int64) + start
        upper = b > a
        a, b, c = a[upper], b[upper], common.data[upper].astype(np.int64)
        stats["pairs_scored"] += len(c)
        jac = c / (sizes[a] + sizes[b] - c)
        if len(best_j) >= n_pairs:  # only what can still enter the top
            enter = jac >= best_j.min()
            a, b, jac = a[enter], b[enter], jac[enter]
        best_j = np.concatenate([best_j, jac])
        best_a = np.concatenate([best_a, a])
        best_b = np.concatenate([best_b, b])
        # indices ascend with ids, so sorting by index is sorting by userId
        order = np.lexsort((best_b, best_a, -best_j))[:n_pairs]
        best_j, best_a, best_b = best_j[order], best_a[order], best_b[order]
        done = stop / n
        if stop == n or (start // block) % 10 == 9:
            elapsed = time.time() - started
            progress(f"[exact] {stop}/{n} users, {stats['pairs_scored']:,} pairs scored, "
                     f"{elapsed:.0f}s (about {elapsed / done - elapsed:.0f}s left)")
    top = [{"userA": int(kept_ids[i]), "userB": int(kept_ids[j]), "jaccard": float(v)}
           for v, i, j in zip(best_j, best_a, best_b, strict=True)]
    return top, stats


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a release folder or zip (local)")
    parser.add_argument("--min-ratings", type=int, default=20)
    parser.add_argument("--n-pairs", type=int, default=100)
    parser.add_argument("--block", type=int, default=1000, help="users per block of the exact product")
    parser.add_argument("--method", default="banded", choices=("banded", "approx_join"))
    parser.add_argument("--n-hashes", type=int, default=None,
                        help="MinHash functions (banded) or hash tables (approx_join); default: twins'")
    parser.add_argument("--spark-master", default="")
    parser.add_argument("--spark-conf", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    from recsys import jobs
    from recsys.data import load_movielens
    from recsys.mlops import spark_session
    from recsys.twins import TwinsConfig, find_twins, recall
    spark = spark_session(args.spark_master, args.spark_conf)
    ratings = load_movielens(spark, jobs.data_source(args.data), progress=print).ratings
    hashes = {} if args.n_hashes is None else {"n_hashes": args.n_hashes}
    config = TwinsConfig(min_ratings=args.min_ratings, n_pairs=args.n_pairs, method=args.method, **hashes)
    t = time.time()
    found_top = find_twins(ratings, config, progress=print)
    lsh_seconds = time.time() - t
    print(f"{args.method}: {lsh_seconds:.1f}s, {found_top.stats['candidate_pairs']:,} candidates", flush=True)
    t = time.time()
    users, movies = read_pairs(args.data)
    exact, stats = exact_top_blocked(users, movies, args.min_ratings, args.n_pairs, args.block)
    exact_seconds = time.time() - t
    if found_top.sets.users_kept != stats["users_kept"]:
        raise SystemExit(f"the two routes kept different users: {found_top.sets.users_kept} "
                         f"against {stats['users_kept']}")
    found = recall(found_top.top, exact)
    print(f"exact (blocked, every pair): {exact_seconds:.1f}s, {stats['pairs_scored']:,} co-rated pairs, "
          f"100th Jaccard {exact[-1]['jaccard']:.4f}")
    print(f"recall of the {args.method} top {args.n_pairs}: {found:.3f} ({stats['users_kept']} users kept)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
