"""Per-trial overhead of `als_search`: real search trials vs bare ALS.fit + one transform.

    python experiments/bench_trial_overhead.py [--split-dir outputs/split] [--trials 3] [--max-iter 10]

In one Spark session, on the same cached train and validation data:

1. warm-up: one bare ``ALS.fit`` + ``transform`` (discarded), so neither side pays the JVM's
   first-fit compilation (an earlier version ran the trial first and charged it ~1.5x);
2. an ``--trials``-trial `als_search` (child runs, fit, full validation evaluation, model
   logging) into a throw-away tracking store, on a copy of the split (no resumed state);
3. for each trial, a bare ``ALS.fit`` with that trial's rank / reg_param / iterations and one
   ``transform`` of the validation set, plus the same model as the trial's fitted outside the
   search (explicit trials fit on the bias baseline's residuals).

Prints each trial's wall time (child run start to end) and breakdown, its bare time, the
ratios, and their medians (target: trial <= 1.3 x bare).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split-dir", default="outputs/split")
    parser.add_argument("--data", default="bundled")
    parser.add_argument("--feedback", default="explicit")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--max-iter", type=int, default=10)
    parser.add_argument("--spark-master", default="")
    args = parser.parse_args(argv)

    tmp = tempfile.mkdtemp(prefix="recsys-bench-")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
    import mlflow

    exp = mlflow.create_experiment("bench", artifact_location=os.path.join(tmp, "artifacts"))
    os.environ["MLFLOW_EXPERIMENT_ID"] = exp

    from pyspark.ml.recommendation import ALS

    from recsys import jobs
    from recsys.constants import ITEM_COL, RATING_COL, USER_COL
    from recsys.models.als import ALSConfig, ALSRecommender

    spark = jobs.spark_session(args.spark_master, ())
    jobs.ensure_split(spark, args.data, args.split_dir)  # make the default split if missing
    split_copy = os.path.join(tmp, "split")
    shutil.copytree(args.split_dir, split_copy, ignore=shutil.ignore_patterns("_searches"))
    _, train, validation, _ = jobs._cached_split(spark, args.data, split_copy)

    def bare(params) -> tuple[float, float]:
        start = time.time()
        model = ALS(rank=params["rank"], regParam=params["reg_param"], maxIter=params["max_iter"],
                    alpha=params["alpha"], implicitPrefs=params["implicit_prefs"], seed=params["seed"],
                    userCol=USER_COL, itemCol=ITEM_COL, ratingCol=RATING_COL,
                    coldStartStrategy="nan").fit(train)
        fit = time.time() - start
        model.transform(validation).agg({"prediction": "avg"}).first()
        total = time.time() - start
        model.userFactors.unpersist(), model.itemFactors.unpersist()
        return total, fit

    warm, _ = bare({"rank": 10, "reg_param": 0.1, "max_iter": args.max_iter, "alpha": 1.0,
                    "implicit_prefs": args.feedback == "implicit", "seed": 42})

    start = time.time()
    jobs.als_search(data=args.data, split_dir=split_copy, feedback=args.feedback,
                    max_evals=args.trials, max_iter=args.max_iter)
    search_seconds = time.time() - start
    client = mlflow.MlflowClient()
    children = client.search_runs([exp], "tags.`recsys.stage` = 'als_trial'")
    children.sort(key=lambda r: int(r.data.tags["recsys.trial"]))

    rows = []
    for run in children:
        config = ALSConfig(**{k: run.data.params[k] for k in ALSConfig.field_names()})  # strings ok
        typed = {"rank": config.rank, "reg_param": config.reg_param, "max_iter": config.max_iter,
                 "alpha": config.alpha, "implicit_prefs": config.implicit_prefs, "seed": config.seed}
        bare_s, bare_fit = bare(typed)
        start = time.time()
        same = ALSRecommender(config).fit(train)
        same.predict(validation).agg({"prediction": "avg"}).first()
        same_s = time.time() - start
        same.release()
        trial_s = (run.info.end_time - run.info.start_time) / 1000.0
        m = run.data.metrics
        rows.append({"rank": config.rank, "reg": config.reg_param, "trial": trial_s,
                     "fit": m["fit_seconds"], "eval": m["eval_seconds"],
                     "log": trial_s - m["fit_seconds"] - m["eval_seconds"], "bare": bare_s,
                     "bare_fit": bare_fit, "same": same_s})

    print(f"warm-up bare fit + transform: {warm:.1f}s; search of {len(rows)} trials: {search_seconds:.1f}s")
    print("| trial | rank | reg_param | trial s | fit | evaluation | run/model logging | bare fit+transform "
          "| same model outside | trial/bare |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for i, r in enumerate(rows):
        print(f"| {i} | {r['rank']} | {r['reg']:.3g} | {r['trial']:.1f} | {r['fit']:.1f} | {r['eval']:.1f} | "
              f"{r['log']:.1f} | {r['bare']:.1f} | {r['same']:.1f} | {r['trial'] / r['bare']:.2f} |")

    def med(key):
        return statistics.median(r[key] for r in rows)

    ratios = [r["trial"] / r["bare"] for r in rows]
    print(f"trial wall time (median): {med('trial'):.1f}s = fit {med('fit'):.1f}s + evaluation "
          f"{med('eval'):.1f}s + run/model logging {med('log'):.1f}s")
    print(f"bare ALS.fit + transform (median): {med('bare'):.1f}s (fit {med('bare_fit'):.1f}s)")
    print(f"ratio trial / bare: median {statistics.median(ratios):.2f}x, range {min(ratios):.2f}-"
          f"{max(ratios):.2f}x (target <= 1.3x); trial / same model outside the search: median "
          f"{statistics.median(r['trial'] / r['same'] for r in rows):.2f}x")
    no_eval = statistics.median((r["trial"] - r["eval"]) / r["bare"] for r in rows)
    fit_only = statistics.median(r["fit"] / r["bare_fit"] for r in rows)
    print(f"ratio without the evaluation protocol: median {no_eval:.2f}x; "
          f"fit only (trial fit / bare fit): median {fit_only:.2f}x")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
