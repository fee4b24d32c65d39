"""Ranking evaluation's top-K: the project's routes against the naive one (issue 6).

    python experiments/bench_topk.py [--split-dir outputs/split] [--rank 10] [--k 10] [--repeat 2]

On one split, fits one ALS on train (plain, no bias columns: the scoring is what is compared)
and computes, for every validation user with a relevant movie, the top ``k`` movies they did
not rate in training, three ways, each materialised with a no-op write and timed:

- ``blocked``: ``recsys.evaluation.recommend`` (factor models go through ``recsys.topk``: one
  blocked users x movies pass, seen movies dropped inside each block);
- ``slack_tiers``: the same function with the factors hidden, i.e. the generic route (one
  ``recommendForUserSubset`` per power-of-two slack tier + one anti-join);
- ``naive``: one ``recommendForUserSubset(k + max seen)`` for everyone, anti-join with the
  training ratings, window top ``k``.

Then checks, inside Spark (nothing collected but counts), that the three give the same
(user, rank, movie) rows. Prints a small table (seconds per repeat, candidate rows, mismatches).
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split-dir", default="outputs/split")
    parser.add_argument("--data", default="bundled")
    parser.add_argument("--rank", type=int, default=10)
    parser.add_argument("--max-iter", type=int, default=10)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--spark-master", default="")
    args = parser.parse_args(argv)

    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from recsys import jobs
    from recsys.core.constants import DEFAULT_RELEVANCE_THRESHOLD, ITEM_COL, RATING_COL, USER_COL
    from recsys.evaluation import recommend
    from recsys.mlops import spark_session
    from recsys.models import ALSConfig, ALSRecommender
    spark = spark_session(args.spark_master, ())
    loaded = jobs.ensure_split(spark, args.data, args.split_dir)
    train, validation = loaded.train.cache(), loaded.validation.cache()
    train.count(), validation.count()
    fields = ALSConfig.field_names()
    config = ALSConfig(rank=args.rank, max_iter=args.max_iter,
                       **({"biases": False} if "biases" in fields else {}))
    model = ALSRecommender(config).fit(train)
    users = (validation.filter(F.col(RATING_COL) >= DEFAULT_RELEVANCE_THRESHOLD)
             .select(USER_COL).distinct().cache())
    n_users = users.count()
    seen = train.select(USER_COL, ITEM_COL)
    k = args.k

    class NoFactors:  # the generic route: only top_n / score_all
        def top_n(self, u, n):
            return model.top_n(u, n)

        def score_all(self, u):
            return model.score_all(u)

    def naive():
        max_seen = (seen.join(users, USER_COL, "left_semi").groupBy(USER_COL).count()
                    .agg(F.max("count")).first()[0])
        cands = model.top_n(users, k + int(max_seen)).join(seen, [USER_COL, ITEM_COL], "left_anti")
        order = Window.partitionBy(USER_COL).orderBy(F.col("score").desc(), F.col(ITEM_COL).asc())
        return (cands.withColumn("rank", F.row_number().over(order)).filter(F.col("rank") <= k)
                .select(USER_COL, ITEM_COL, "score", "rank"))

    routes = {"blocked": lambda: recommend(model, users, train, k),
              "slack_tiers": lambda: recommend(NoFactors(), users, train, k),
              "naive": naive}
    seconds, results = {}, {}
    for _rep in range(args.repeat):
        for name, build in routes.items():
            start = time.time()
            df = build()
            df.write.format("noop").mode("overwrite").save()
            seconds.setdefault(name, []).append(time.time() - start)
            results[name] = df
    reference = results["naive"].select(USER_COL, "rank", ITEM_COL).cache()
    n_rows = reference.count()
    print(f"split {args.split_dir}: {n_users} users with a relevant validation movie, "
          f"ALS rank {args.rank}, k={k}, {n_rows} recommendations")
    print("| route | seconds (each repeat) | rows | mismatches vs naive |")
    print("| --- | --- | ---: | ---: |")
    for name, df in results.items():
        rows = df.select(USER_COL, "rank", ITEM_COL)
        diff = rows.exceptAll(reference).count() + reference.exceptAll(rows).count()
        shown = ", ".join(f"{s:.2f}" for s in seconds[name])
        print(f"| {name} | {shown} | {rows.count()} | {diff} |")
    base = min(seconds["naive"])
    for name in ("blocked", "slack_tiers"):
        print(f"naive / {name} (best of {args.repeat}): {base / min(seconds[name]):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
