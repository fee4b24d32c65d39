"""How many pair rows each twins candidate method must build, counted without building them (issue 6).

    python experiments/bench_lsh_work.py --data <release> [--approx-tables 7] [--min-ratings 20]

Spark's ``approxSimilarityJoin`` (MinHash, ``numHashTables = t``) joins the data with itself on
equal (table, hash value): a bucket of ``n`` users yields ``n * n`` joined rows (both orders and
each user with itself), which it then de-duplicates and scores one by one. The banded method
joins users on equal (band, key, sub-bucket), ``n * n`` rows per sub-bucket of ``n <= bucket_cap``
users, and keeps ``userA < userB``. Both counts come from one ``groupBy`` over the buckets,
``U * t`` or ``U * b`` rows: cheap even where the joins themselves take hours.

The work the approx join would do at a scale where it cannot finish in the time box is then
``rows at that scale / rows at a scale where it finished`` times the time it took there: an
extrapolation from a measured rate, reported as such, next to the time-boxed lower bound.
"""

from __future__ import annotations

import argparse
import time


def bucket_rows(keys, cols):
    """(buckets with >= 2 users, sum of n*n over them, largest n) of a (cols..., user) frame."""
    from pyspark.sql import functions as F

    sizes = keys.groupBy(*cols).agg(F.count("*").alias("n")).filter(F.col("n") >= 2)
    row = sizes.agg(F.count("*").alias("buckets"), F.sum(F.col("n") * F.col("n")).alias("rows"),
                    F.max("n").alias("largest")).first()
    return int(row["buckets"] or 0), int(row["rows"] or 0), int(row["largest"] or 0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="bundled")
    parser.add_argument("--approx-tables", type=int, default=7)
    parser.add_argument("--min-ratings", type=int, default=20)
    parser.add_argument("--spark-master", default="")
    args = parser.parse_args(argv)

    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    from recsys import jobs
    from recsys.data import load_movielens
    from recsys.mlops import spark_session
    from recsys.twins import (
        TwinsConfig,
        banded_candidates,
        choose_bands,
        minhash_model,
        set_vectors,
        signatures,
        user_sets,
    )
    spark = spark_session(args.spark_master, ())
    config = TwinsConfig(min_ratings=args.min_ratings)
    ratings = load_movielens(spark, jobs.data_source(args.data), progress=print).ratings
    t0 = time.time()
    us = user_sets(ratings, config.min_ratings)
    print(f"users kept {us.users_kept}, movies {us.n_movies} ({time.time() - t0:.1f}s)")

    t = time.time()
    vectors = set_vectors(us.sets, us.n_movies)
    hashed = minhash_model(vectors, args.approx_tables, config.seed).transform(vectors)
    keys = (hashed.select("user", F.posexplode("hashes").alias("table", "h"))
            .select("user", "table", vector_to_array("h")[0].alias("value")))
    buckets, rows, largest = bucket_rows(keys, ["table", "value"])
    print(f"approx_join ({args.approx_tables} tables): {buckets} shared buckets, largest {largest}, "
          f"joined rows {rows} ({time.time() - t:.1f}s)")

    t = time.time()
    bands, band_rows_per = choose_bands(config.n_hashes, config.target_similarity)
    sigs = signatures(us.sets, us.n_movies, config.n_hashes, config.seed)
    _pairs, band_rows = banded_candidates(sigs, bands, band_rows_per, config.bucket_cap, config.seed)
    b_buckets, b_rows, b_largest = bucket_rows(band_rows.select("band", "key", "sub", "user"),
                                               ["band", "key", "sub"])
    print(f"banded ({bands} bands x {band_rows_per} rows, cap {config.bucket_cap}): {b_buckets} "
          f"shared sub-buckets, largest {b_largest}, joined rows {b_rows} ({time.time() - t:.1f}s)")
    print(f"joined rows approx_join / banded: {rows / max(b_rows, 1):.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
