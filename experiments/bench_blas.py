"""Does a native BLAS make Spark ALS faster? Java BLAS against a native one, on the same data.

Spark's linear algebra goes through ``dev.ludovic.netlib``: it loads the system's
``libblas.so.3`` / ``liblapack.so.3`` when the dynamic linker finds them, and falls back to a
pure-Java implementation otherwise (the ``netlib-blas: JNI_OnLoad: dlopen(libblas.so.3) failed``
line at start-up). This script fits the same ALS model in fresh processes, alternating the two
set-ups so that machine load hits both alike:

- ``java``: the library path with no BLAS on it (whatever the machine has is hidden only if it
  is not installed system-wide: the script reports which implementation each run really used);
- ``native``: ``LD_LIBRARY_PATH`` pointing at ``--native-lib-dir``, a folder holding
  ``libblas.so.3`` and ``liblapack.so.3`` (e.g. OpenBLAS: ``apt-get install libopenblas0-pthread``,
  or without root ``apt-get download libopenblas0-pthread libgfortran5`` and ``dpkg -x`` them).

Each run reads the release, caches the ratings, then times ``ALS.fit`` (factors materialised)
and one ``transform`` + RMSE of all ratings. Prints one JSON line per run and the median ratio.

    B=/tmp/blas/usr/lib/x86_64-linux-gnu   # where the two .deb were unpacked
    .venv/bin/python experiments/bench_blas.py --data outputs/benchmark/data/ml-synth-1000000-369d1588e6 \\
        --native-lib-dir $B/openblas-pthread:$B --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def child(args) -> None:
    from pyspark.ml.evaluation import RegressionEvaluator
    from pyspark.ml.recommendation import ALS

    from recsys.core import get_spark
    from recsys.data import load_movielens

    spark = get_spark(args.spark_master)
    jvm = spark.sparkContext._jvm
    blas = jvm.dev.ludovic.netlib.blas.BLAS.getInstance().getClass().getName()
    lapack = jvm.dev.ludovic.netlib.lapack.LAPACK.getInstance().getClass().getName()
    ratings = load_movielens(spark, args.data, progress=print).ratings.cache()
    n = ratings.count()
    start = time.time()
    model = ALS(rank=args.rank, maxIter=args.max_iter, regParam=0.1, seed=42, userCol="userId",
                itemCol="movieId", ratingCol="rating").fit(ratings)
    model.userFactors.count(), model.itemFactors.count()
    fit = time.time() - start
    start = time.time()
    rmse = RegressionEvaluator(metricName="rmse", labelCol="rating").evaluate(model.transform(ratings))
    print("RESULT " + json.dumps({"blas": blas, "lapack": lapack, "ratings": n, "rank": args.rank,
                                  "fit_seconds": round(fit, 2),
                                  "transform_seconds": round(time.time() - start, 2),
                                  "train_rmse": round(rmse, 6)}), flush=True)
    spark.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="a MovieLens-layout release (zip or folder)")
    parser.add_argument("--native-lib-dir",
                        help="folder(s), ':'-separated, with libblas.so.3 and liblapack.so.3 "
                             "(e.g. OpenBLAS) and what they link to (libgfortran.so.5)")
    parser.add_argument("--rank", type=int, default=10)
    parser.add_argument("--max-iter", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--spark-master", default="local[*]")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    dirs = (args.native_lib_dir or "").split(os.pathsep)
    if not any(os.path.exists(os.path.join(d, "libblas.so.3")) for d in dirs):
        sys.exit(f"--native-lib-dir {args.native_lib_dir}: no libblas.so.3 there")
    argv = [sys.executable, __file__, "--child", "--data", args.data, "--rank", str(args.rank),
            "--max-iter", str(args.max_iter), "--spark-master", args.spark_master]
    results: dict[str, list[dict]] = {"java": [], "native": []}
    for i in range(args.repeats):
        for mode in ("java", "native"):
            env = dict(os.environ)
            if mode == "native":
                env["LD_LIBRARY_PATH"] = ":".join(filter(None, [args.native_lib_dir,
                                                                env.get("LD_LIBRARY_PATH")]))
                # Spark runs one task per core already; BLAS threads on top would oversubscribe
                env.setdefault("OPENBLAS_NUM_THREADS", "1")
                env.setdefault("MKL_NUM_THREADS", "1")
            done = subprocess.run(argv, env=env, capture_output=True, text=True)
            line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
            if done.returncode or not line:
                sys.exit(f"{mode} run failed:\n{done.stderr[-3000:]}")
            row = {"mode": mode, "repeat": i, **json.loads(line[0][7:]),
                   "load_average": os.getloadavg()[0]}
            print(json.dumps(row), flush=True)
            results[mode].append(row)
    java = statistics.median(r["fit_seconds"] for r in results["java"])
    native = statistics.median(r["fit_seconds"] for r in results["native"])
    print(f"median ALS.fit: java BLAS {java:.1f} s ({results['java'][0]['blas']}), native {native:.1f} s "
          f"({results['native'][0]['blas']}): native is {java / native:.2f}x the speed of java")


if __name__ == "__main__":
    main()
