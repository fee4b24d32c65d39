"""Batch recommendations for every user: `recsys.batch.recommend_all` against Spark's own route.

    python experiments/bench_recommend.py --part compare --scales 1M,10M [--repeat 3] [--timeout 3600]
    python experiments/bench_recommend.py --part full          # (c) 331k users x 86.5k movies, rank 64
    python experiments/bench_recommend.py --part serving       # (d) one user in-process, NumPy

``compare`` (a, b), per scale, in one process and one SparkSession: the synthetic release of
``experiments/benchmark.py`` (generated or reused from its cache, ``--work-dir``), its default
random 80/10/10 split, a short plain ALS (rank 10, 5 iterations, no bias columns: both routes
score the same ``ALSModel``), then, each materialised with a no-op write and timed:

- ``recommend_all``: :func:`recsys.batch.recommend_all` for every user (blocked top-K, seen
  movies dropped inside the blocks);
- ``spark_naive``: ``ALSModel.recommendForAllUsers(k + max seen)``, explode, anti-join with the
  training pairs, window top ``k`` (exact: a user loses at most ``max seen`` of the list).

Then, inside Spark, the two outputs are compared row by row: same movies per user, scores
within 1e-4 (Spark scores in float32, recommend_all ranks on float64 products). A route that
passes ``--timeout`` seconds is cancelled (its job group) and reported with how far it got
(tasks done of its stages). The routes alternate (a, b, a, b, ...) ``--repeat`` times.

``full`` (c): random float32 factors of ml-latest's shape (330,975 users, 86,537 movies,
rank 64; the cost does not depend on the values: every user is scored against every movie) and
a synthetic seen set of ~33.8M distinct (user, movie) pairs with skewed movie popularity,
written to Parquet first (as a loaded model and a split would be), then ``recommend_all`` for
every user, writing Parquet, timed end to end.

``serving`` (d): the single-user reference for the served pyfunc: ``scores = Q @ p`` (float32,
86,537 x 64) + ``np.argpartition`` for the top ``k`` + sorting those ``k``, with and without
setting ~100 seen movies to -inf; median (and p10/p90) over ``--serving-users`` users.

Results are merged into ``experiments/results/recommend.csv`` (a later run replaces its own
rows) and ``recommend.md`` is redrawn from all rows.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
FIELDS = ["part", "scale", "users", "movies", "seen_pairs", "route", "repeat", "seconds", "status", "note",
          "load_avg", "when"]
FULL_USERS, FULL_MOVIES, FULL_RANK, FULL_SEEN = 330_975, 86_537, 64, 33_832_162
NOTES_MARKER = "<!-- notes: kept when the tables above are redrawn -->"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Recorder:
    """Rows of recommend.csv, keyed by (part, scale, route, repeat); each add rewrites both files."""

    def __init__(self, results: Path):
        self.results = results
        results.mkdir(parents=True, exist_ok=True)
        path = results / "recommend.csv"
        self.rows = {}
        if path.exists():
            with open(path, newline="") as fh:
                for r in csv.DictReader(fh):
                    self.rows[(r["part"], r["scale"], r["route"], r["repeat"])] = r
        self.machine = f"{platform.node()} {os.cpu_count()} cores"

    def add(self, **row) -> None:
        row = {**{f: "" for f in FIELDS}, **row, "load_avg": f"{os.getloadavg()[0]:.1f}",
               "when": f"{_now()} on {self.machine}"}
        if isinstance(row["seconds"], float):
            row["seconds"] = f"{row['seconds']:.2f}" if row["seconds"] >= 1 else f"{row['seconds']:.5f}"
        self.rows[(row["part"], row["scale"], row["route"], str(row["repeat"]))] = row
        print(f"[bench] {row['part']} {row['scale']} {row['route']} #{row['repeat']}: {row['status']} "
              f"{row['seconds']}s {row['note']}", flush=True)
        self.write()

    def write(self) -> None:
        rows = sorted(self.rows.values(), key=lambda r: (r["part"], r["scale"], r["route"], r["repeat"]))
        with open(self.results / "recommend.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        lines = ["| part | scale | users | movies | seen pairs | route | repeat | seconds | status | load "
                 "| note |", "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | --- | ---: | --- |"]
        for r in rows:
            lines.append(f"| {r['part']} | {r['scale']} | {r['users']} | {r['movies']} | {r['seen_pairs']} | "
                         f"{r['route']} | {r['repeat']} | {r['seconds']} | {r['status']} | {r['load_avg']} | "
                         f"{r['note'].replace('|', chr(92) + '|')} |")  # a "|" in a note ends the cell
        ratios = []
        for scale in sorted({r["scale"] for r in rows if r["part"] == "compare"}):
            times = {}
            for r in rows:
                if r["part"] == "compare" and r["scale"] == scale and r["status"] == "ok" and r["seconds"]:
                    times.setdefault(r["route"], []).append(float(r["seconds"]))
            if times.get("recommend_all") and times.get("spark_naive"):
                a, b = times["recommend_all"], times["spark_naive"]
                ma, mb = statistics.median(a), statistics.median(b)
                ratios.append(f"- {scale}: spark_naive / recommend_all = {min(b) / max(a):.2f}x to "
                              f"{max(b) / min(a):.2f}x (medians {mb:.1f}s / {ma:.1f}s = {mb / ma:.2f}x; "
                              f"{len(a)} and {len(b)} runs)")
        text = ("# Batch recommendations: benchmark results\n\nWritten by `experiments/bench_recommend.py` "
                "(its docstring says what each part measures). `load`: the machine's 1-minute load "
                "average when the row was recorded (2 cores, shared).\n\n" + "\n".join(lines) + "\n"
                + ("\nRatios (range = slowest/fastest pairings):\n\n" + "\n".join(ratios) + "\n"
                   if ratios else ""))
        md = self.results / "recommend.md"
        old = md.read_text() if md.exists() else ""
        if NOTES_MARKER in old:  # hand-written notes below the marker survive a rerun
            text += "\n" + NOTES_MARKER + old.split(NOTES_MARKER, 1)[1]
        md.write_text(text)


# ---------------------------------------------------------------- helpers


def timed_write(spark, df, group: str, timeout: float, path: str | None = None):
    """Materialise ``df`` (no-op write, or Parquet at ``path``: the first repeat's output is
    kept for the comparison) under job group ``group``; cancel it after ``timeout``.

    Returns (seconds, status, progress note)."""
    sc = spark.sparkContext
    box = {}

    def run():
        sc.setJobGroup(group, group, interruptOnCancel=True)
        try:
            if path:
                df.write.mode("overwrite").parquet(path)
            else:
                df.write.format("noop").mode("overwrite").save()
            box["ok"] = True
        except Exception as err:  # cancelled, or OOM
            box["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"

    start = time.time()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    note = ""
    if thread.is_alive():
        note = progress_of(sc, group)
        sc.cancelJobGroup(group)
        thread.join(120)
        return time.time() - start, f"timeout ({timeout:.0f}s)", note
    seconds = time.time() - start
    if "error" in box:
        return seconds, "failed", f"{box['error']}; {progress_of(sc, group)}"
    return seconds, "ok", note


def progress_of(sc, group: str) -> str:
    tracker = sc.statusTracker()
    done = total = 0
    stages = 0
    for job_id in tracker.getJobIdsForGroup(group):
        info = tracker.getJobInfo(job_id)
        for stage_id in (info.stageIds if info else []):
            stage = tracker.getStageInfo(stage_id)
            if stage:
                stages += 1
                done += stage.numCompletedTasks
                total += stage.numTasks
    return f"got to {done} of {total} tasks in {stages} stage(s)"


def compare_outputs(a, b, tol: float = 1e-4) -> dict:
    """Row-level comparison inside Spark: counts only."""
    from pyspark.sql import functions as F

    joined = (a.select("userId", "movieId", F.col("score").alias("sa"))
              .join(b.select("userId", "movieId", F.col("score").alias("sb")), ["userId", "movieId"], "full"))
    row = joined.agg(
        F.count(F.lit(1)).alias("rows"),
        F.count(F.when(F.col("sa").isNull(), 1)).alias("only_b"),
        F.count(F.when(F.col("sb").isNull(), 1)).alias("only_a"),
        F.count(F.when(F.abs(F.col("sa") - F.col("sb")) > tol, 1)).alias("score_diff"),
        F.max(F.abs(F.col("sa") - F.col("sb"))).alias("max_diff")).first()
    return row.asDict()


# ---------------------------------------------------------------- parts


def _sibling(name: str):
    """Another script of experiments/, loaded by its path (the scripts are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def part_compare(args, rec: Recorder) -> None:
    benchmark = _sibling("benchmark")  # the benchmark's release cache
    parse_scale, release_for = benchmark.parse_scale, benchmark.release_for
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from recsys import jobs
    from recsys.data import scaled_config
    from recsys.mlops import spark_session
    from recsys.models import ALSConfig, ALSRecommender
    from recsys.recommend import recommend_all
    spark = spark_session(args.spark_master, args.spark_conf)
    work = Path(args.work_dir).resolve()
    for label in [s.strip() for s in args.scales.split(",") if s.strip()]:
        config = scaled_config(parse_scale(label), seed=42)
        release = release_for(config, work)
        if not (release / "synthetic_stats.json").exists():
            print(f"[bench] {label}: generating {release}", flush=True)
            from recsys.data import generate

            generate(spark, config, str(release), progress=print)
        split_dir = str(work / f"recommend-split-{label}")
        loaded = jobs.ensure_split(spark, str(release), split_dir)
        train = loaded.train.select("userId", "movieId").cache()
        n_seen = train.count()
        start = time.time()
        model = ALSRecommender(ALSConfig(rank=10, max_iter=5, biases=False)).fit(loaded.train)
        fit_seconds = time.time() - start
        uf, itf = model.model.userFactors.cache(), model.model.itemFactors.cache()
        n_users, n_movies = uf.count(), itf.count()
        max_seen = int(train.groupBy("userId").count().agg(F.max("count")).first()[0])
        k = args.k
        common = dict(part="compare", scale=label, users=n_users, movies=n_movies, seen_pairs=n_seen)
        print(f"[bench] {label}: {n_users} users, {n_movies} movies, {n_seen} train pairs, max seen "
              f"{max_seen}; ALS fit {fit_seconds:.1f}s", flush=True)

        def fast(uf=uf, itf=itf, train=train, k=k):
            return recommend_all(uf, itf, train, k)[0]

        def naive(model=model, train=train, k=k, max_seen=max_seen):
            recs = model.model.recommendForAllUsers(k + max_seen)
            cands = (recs.select("userId", F.explode("recommendations").alias("r"))
                     .select("userId", F.col("r.movieId").alias("movieId"),
                             F.col("r.rating").cast("double").alias("score"))
                     .join(train, ["userId", "movieId"], "left_anti"))
            order = Window.partitionBy("userId").orderBy(F.col("score").desc(), F.col("movieId").asc())
            return (cands.withColumn("rank", F.row_number().over(order)).filter(F.col("rank") <= k)
                    .select("userId", "rank", "movieId", "score"))

        outputs, seconds_of = {}, {"recommend_all": [], "spark_naive": []}
        for rep in range(1, args.repeat + 1):
            for route, build in (("recommend_all", fast), ("spark_naive", naive)):
                if route == "spark_naive" and rep > 1 and (
                        len(seconds_of[route]) < rep - 1  # it failed or timed out: not again
                        or min(seconds_of[route]) / max(seconds_of["recommend_all"]) >= 1.5):
                    continue  # a ratio of 1.5x or more is clear from one run of the slow route
                df = build()
                path = str(work / f"recommend-out-{label}-{route}") if rep == 1 else None
                seconds, status, note = timed_write(spark, df, f"{route}-{label}-{rep}", args.timeout, path)
                if route == "spark_naive":
                    note = f"k + max seen = {k + max_seen}; {note}"
                if status == "ok":
                    if path:
                        outputs[route] = spark.read.parquet(path)
                        note = f"{note} (Parquet write; later repeats: no-op write)".lstrip()
                    seconds_of[route].append(seconds)
                rec.add(**common, route=route, repeat=rep, seconds=seconds, status=status, note=note)
            if rep == 1 and len(outputs) == 2:
                check_equal(rec, common, outputs, fit_seconds, max_seen)
        uf.unpersist(), itf.unpersist(), train.unpersist()


def check_equal(rec, common, outputs, fit_seconds, max_seen) -> None:
    diff = compare_outputs(outputs["recommend_all"], outputs["spark_naive"])
    same = diff["only_a"] == diff["only_b"] == diff["score_diff"] == 0
    rec.add(**common, route="equality", repeat=0, seconds="", status="same" if same else "DIFFERENT",
            note=(f"{diff['rows']} (user, movie) rows; only in recommend_all {diff['only_a']}, "
                  f"only in spark_naive {diff['only_b']}; |score diff| > 1e-4: {diff['score_diff']}; "
                  f"max |score diff| {diff['max_diff']:.2e}; ALS fit {fit_seconds:.1f}s; "
                  f"max seen {max_seen}"))


def part_full(args, rec: Recorder) -> None:
    from pyspark.sql import functions as F

    from recsys.mlops import spark_session
    from recsys.recommend import recommend_all

    spark = spark_session(args.spark_master, args.spark_conf)
    scratch = Path(tempfile.mkdtemp(prefix="bench-recommend-full-", dir=args.work_dir))
    rank = args.rank

    def factors(n, seed):
        return (spark.range(1, n + 1).select(
            F.col("id").cast("int").alias("id"),
            F.array(*[F.randn(seed * 1000 + j).cast("float") for j in range(rank)]).alias("features")))

    start = time.time()
    factors(FULL_USERS, 1).write.parquet(str(scratch / "users"))
    factors(FULL_MOVIES, 2).write.parquet(str(scratch / "movies"))
    # seen: users uniform, movies skewed toward low ids (popularity), duplicates dropped
    draws = int(FULL_SEEN * 1.12)
    (spark.range(draws).select(
        (F.pmod(F.xxhash64("id", F.lit(7)), F.lit(FULL_USERS)) + 1).cast("int").alias("userId"),
        (F.floor(F.pow(F.rand(11), F.lit(2.5)) * FULL_MOVIES) + 1).cast("int").alias("movieId"))
     .distinct().write.parquet(str(scratch / "seen")))
    uf, itf = spark.read.parquet(str(scratch / "users")), spark.read.parquet(str(scratch / "movies"))
    seen = spark.read.parquet(str(scratch / "seen"))
    n_seen = seen.count()
    print(f"[bench] full: inputs written in {time.time() - start:.1f}s ({n_seen} seen pairs)", flush=True)
    for rep in range(1, args.repeat + 1):
        out = scratch / f"recs-{rep}"
        start = time.time()
        recs, counts = recommend_all(uf, itf, seen, args.k, progress=print)
        recs.write.parquet(str(out))
        seconds = time.time() - start
        rows = spark.read.parquet(str(out)).count()
        rec.add(part="full", scale=f"{FULL_USERS}x{FULL_MOVIES} r{rank}", users=counts["users"],
                movies=counts["movies"], seen_pairs=n_seen, route="recommend_all+parquet", repeat=rep,
                seconds=seconds, status="ok" if rows == counts["users"] * args.k else f"rows {rows}",
                note=f"{rows} rows written; random factors (cost is value-independent); target <= 600s")
    import shutil

    shutil.rmtree(scratch, ignore_errors=True)


def part_serving(args, rec: Recorder) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    q = rng.standard_normal((FULL_MOVIES, args.rank), dtype=np.float32)
    p_all = rng.standard_normal((args.serving_users, args.rank), dtype=np.float32)
    seen = [rng.choice(FULL_MOVIES, size=100, replace=False) for _ in range(args.serving_users)]
    k = args.k
    for masked in (False, True):
        times = []
        for i in range(args.serving_users):
            start = time.perf_counter()
            scores = q @ p_all[i]
            if masked:
                scores[seen[i]] = -np.inf
            top = np.argpartition(scores, -k)[-k:]
            top = top[np.lexsort((top, -scores[top]))]
            times.append(time.perf_counter() - start)
        ms = np.array(times) * 1000
        rec.add(part="serving", scale=f"{FULL_MOVIES}x{args.rank}", users=args.serving_users,
                movies=FULL_MOVIES, seen_pairs=100 if masked else 0,
                route="numpy Q@p + argpartition" + (" + seen" if masked else ""),
                repeat=1, seconds=float(np.median(ms)) / 1000, status="ok",
                note=f"per user: median {np.median(ms):.3f} ms, p10 {np.percentile(ms, 10):.3f}, "
                     f"p90 {np.percentile(ms, 90):.3f} (float32, OPENBLAS threads "
                     f"{os.environ.get('OPENBLAS_NUM_THREADS', 'default')})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("compare", "full", "serving"), required=True)
    parser.add_argument("--scales", default="1M,10M")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--rank", type=int, default=FULL_RANK, help="full and serving parts")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per spark_naive run")
    parser.add_argument("--serving-users", type=int, default=2000)
    parser.add_argument("--work-dir", default=str(ROOT / "outputs" / "benchmark"))
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--spark-master", default="local[2]")
    parser.add_argument("--spark-conf", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    Path(args.work_dir).mkdir(parents=True, exist_ok=True)
    rec = Recorder(Path(args.results))
    {"compare": part_compare, "full": part_full, "serving": part_serving}[args.part](args, rec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
