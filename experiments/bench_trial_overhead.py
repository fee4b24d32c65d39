"""Per-trial overhead of `als_search`: one real search trial vs a bare ALS.fit + one transform.

    python experiments/bench_trial_overhead.py [--split-dir outputs/split] [--max-iter 10]

Runs a one-trial `als_search` (child run, fit, full validation evaluation, model logging) into a
throw-away tracking store, then, in the same Spark session and on the same cached train and
validation data, a bare ``ALS.fit`` with the trial's parameters and one ``transform`` of the
validation set. Prints both wall times, the trial's breakdown, and the ratio (target <= 1.3).
The split is copied to a temporary directory so the search starts fresh (no resumed state).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split-dir", default="outputs/split")
    parser.add_argument("--data", default="bundled")
    parser.add_argument("--feedback", default="explicit")
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

    spark = jobs.spark_session(args.spark_master, ())
    jobs.ensure_split(spark, args.data, args.split_dir)  # make the default split if missing
    split_copy = os.path.join(tmp, "split")
    shutil.copytree(args.split_dir, split_copy, ignore=shutil.ignore_patterns("_searches"))

    start = time.time()
    summary = jobs.als_search(data=args.data, split_dir=split_copy, feedback=args.feedback,
                              max_evals=1, max_iter=args.max_iter)
    search_seconds = time.time() - start
    client = mlflow.MlflowClient()
    trial = client.get_run(summary["best_run_id"])
    trial_seconds = (trial.info.end_time - trial.info.start_time) / 1000.0
    fit_s, eval_s = trial.data.metrics["fit_seconds"], trial.data.metrics["eval_seconds"]
    params = summary["best_params"]

    loaded, train, validation, _ = jobs._cached_split(spark, args.data, split_copy)
    start = time.time()
    model = ALS(rank=params["rank"], regParam=params["reg_param"], maxIter=params["max_iter"],
                alpha=params["alpha"], implicitPrefs=params["implicit_prefs"], seed=params["seed"],
                userCol=USER_COL, itemCol=ITEM_COL, ratingCol=RATING_COL,
                coldStartStrategy="nan").fit(train)
    bare_fit = time.time() - start
    model.transform(validation).agg({"prediction": "avg"}).first()
    bare = time.time() - start
    # the same model as the trial's (explicit trials fit on the bias baseline's residuals)
    from recsys.models.als import ALSConfig, ALSRecommender

    start = time.time()
    same = ALSRecommender(ALSConfig(**{k: params[k] for k in ALSConfig.field_names()})).fit(train)
    same.predict(validation).agg({"prediction": "avg"}).first()
    bare_same = time.time() - start

    print(f"trial params: {params}")
    print(f"search (1 trial, incl. baselines and test evaluation): {search_seconds:.1f}s")
    print(f"trial wall time: {trial_seconds:.1f}s = fit {fit_s:.1f}s + evaluation {eval_s:.1f}s "
          f"+ run/model logging {trial_seconds - fit_s - eval_s:.1f}s")
    print(f"bare ALS.fit + transform: {bare:.1f}s (fit {bare_fit:.1f}s)")
    print(f"same model (biases={params.get('biases')}) fit + predict outside the search: {bare_same:.1f}s")
    print(f"ratio trial / bare: {trial_seconds / bare:.2f}x (target <= 1.3x); "
          f"trial / same model outside the search: {trial_seconds / bare_same:.2f}x")
    print(f"ratio without the evaluation protocol: {(trial_seconds - eval_s) / bare:.2f}x")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
