"""One `als_search` trial against the same trial written by hand with Spark's built-ins.

    python experiments/bench_trial_overhead.py --data <release> --split-dir <split> [--trials 3]
        [--max-iter 10] [--max-rank 32] [--hand-timeout 1800] [--no-hand]
        [--out results/trial_overhead.md]

In one Spark session, on the same cached train and validation data:

1. warm-up: one ALS fit and transform (discarded), so neither side pays the JVM's first-fit
   compilation;
2. an ``--trials``-trial `als_search` (nested runs, fit, the evaluation protocol, model logging)
   into a throw-away tracking store, on a copy of the split (no resumed state), over the
   project's search space with ``rank`` capped at ``--max-rank``;
3. for each trial, in the same order, the hand-written trial with that trial's ALS parameters,
   on the same model: explicit trials fit ALS on the same cached residuals of the same bias
   baseline and fold the biases into the factors exactly as the search does
   (``recsys.models.als``), so both sides score the same model. Then, with Spark's built-ins:
   ``transform`` + ``RegressionEvaluator`` (RMSE; rows ALS cannot score take the bias baseline's
   prediction, and predictions are clipped to the rating scale, as the protocol defines),
   ``recommendForUserSubset(k + max seen)`` for every validation user with a relevant movie,
   removal of seen movies (anti-join), the top ``k`` per user (window; score descending, then
   movieId), and ``RankingEvaluator`` for precision, NDCG, MAP and recall at ``k`` on the cached
   lists.

Prints, per trial, the trial's wall time (its run opened to closed, as the search records it)
and breakdown (fit, evaluation, run and model logging), the hand-written trial's steps, the
ratios (trial / hand-written, evaluation / fit, logging / fit) and the largest metric
difference between the two; then the medians and ranges. A hand-written trial that runs past
``--hand-timeout`` seconds is cancelled (its Spark jobs are stopped), and one that fails (out of
memory or disk) is stopped too; either is reported with the step it reached, and the later
hand-written trials are not run. ``--no-hand`` runs the search's trials only (for repeated
measurements of evaluation / fit and logging / fit).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

METRICS = ("rmse", "precision_at_k", "recall_at_k", "ndcg_at_k", "map_at_k")
RANKING = {"precision_at_k": "precisionAtK", "recall_at_k": "recallAtK", "ndcg_at_k": "ndcgAtK",
           "map_at_k": "meanAveragePrecisionAtK"}


class Cancelled(Exception):
    """The hand-written trial ran past its time limit."""


def list_differences(model, top, users, train, k: int) -> str:
    """Where the hand-written top ``k`` (``top``: userId, movieId) differs from the protocol's
    (:func:`recsys.topk.top_k_unseen` on the same factors): how many users' lists differ, and
    the largest float64 score by which a movie only in the protocol's list beats one only in the
    hand-written list (Spark's ``recommendForUserSubset`` ranks on float32 scores; the protocol
    ranks candidates on float64, then movieId); and for how many users the protocol's ``k``-th
    and ``k + 1``-th scores are closer than one float32 step (2**-23 of the score), the pairs
    whose order a float32 ranking cannot tell."""
    from pyspark.sql import functions as F

    from recsys.core.constants import ITEM_COL, RANK_COL, SCORE_COL, USER_COL
    from recsys.evaluation import top_k_unseen

    deeper = top_k_unseen(model.userFactors, model.itemFactors, train.select(USER_COL, ITEM_COL), k + 1,
                          users=users).cache()
    edge = deeper.groupBy(USER_COL).agg(
        F.max(F.when(F.col(RANK_COL) == k, F.col(SCORE_COL))).alias("_sk"),
        F.max(F.when(F.col(RANK_COL) == k + 1, F.col(SCORE_COL))).alias("_sk1"))
    close = edge.agg(F.count(F.lit(1)).alias("n"), F.sum(
        (F.col("_sk") - F.col("_sk1") < F.abs("_sk") * 2.0 ** -23).cast("int")).alias("close")).first()
    ours = deeper.filter(F.col(RANK_COL) <= k).select(USER_COL, ITEM_COL, F.lit(1).alias("_o"))
    hand = top.select(USER_COL, ITEM_COL, F.lit(1).alias("_h"))
    diff = ours.join(hand, [USER_COL, ITEM_COL], "full").filter(F.col("_o").isNull() | F.col("_h").isNull())
    uf = model.userFactors.select(F.col("id").alias(USER_COL), F.col("features").alias("_uf"))
    itf = model.itemFactors.select(F.col("id").alias(ITEM_COL), F.col("features").alias("_if"))
    dot = F.aggregate(F.zip_with("_uf", "_if", lambda a, b: a.cast("double") * b.cast("double")),
                      F.lit(0.0), lambda acc, x: acc + x)
    per_user = (diff.join(uf, USER_COL).join(itf, ITEM_COL).withColumn("_s", dot)
                .groupBy(USER_COL)
                .agg(F.min(F.when(F.col("_o").isNotNull(), F.col("_s"))).alias("_ours"),
                     F.max(F.when(F.col("_h").isNotNull(), F.col("_s"))).alias("_hand")))
    row = per_user.agg(F.count(F.lit(1)).alias("n"), F.max(F.col("_ours") - F.col("_hand")).alias("gap"),
                       F.max(F.abs("_ours")).alias("scale")).first()
    deeper.unpersist()
    return (f"top-{k} lists differ for {row['n']} user(s); largest float64 score margin of a movie only "
            f"in the protocol's list over one only in Spark's: {row['gap'] or 0.0:.2e} "
            f"(scores up to {row['scale'] or 0.0:.2f}); {close['close'] or 0} of {close['n']} users' "
            f"{k}th and {k + 1}th scores are closer than one float32 step")


def hand_written_trial(spark, params: dict, train, validation, fallback, k: int, threshold: float,
                       timeout: float, trial_metrics: dict | None = None) -> dict:
    """The trial written with Spark's built-ins: ``{"seconds": {step: s}, "metrics": {...},
    "stopped": None or the step that was cancelled}``. When a metric differs from
    ``trial_metrics`` (the search trial's ``val_*``) by more than 1e-6, a note says where the
    lists differ (:func:`list_differences`, not timed)."""
    from pyspark.ml.evaluation import RankingEvaluator, RegressionEvaluator
    from pyspark.ml.recommendation import ALS, ALSModel
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from recsys.core.constants import ALS_BLOCKS_CONF, ITEM_COL, MAX_RATING, MIN_RATING, RATING_COL, USER_COL
    from recsys.models import with_biases, write_als_model

    sc = spark.sparkContext
    group = f"hand-{time.time_ns()}"
    sc.setJobGroup(group, "hand-written trial", interruptOnCancel=True)
    timer = threading.Timer(timeout, lambda: sc.cancelJobGroup(group))
    timer.daemon = True
    out = {"seconds": {}, "metrics": {}, "stopped": None, "notes": []}
    start = last = time.time()
    step = "fit"

    def done(name):
        nonlocal last, step
        now = time.time()
        out["seconds"][name] = now - last
        last = now
        print(f"  [hand] {name}: {out['seconds'][name]:.1f}s", flush=True)

    timer.start()
    try:
        implicit = params["implicit_prefs"]
        als = ALS(rank=params["rank"], regParam=params["reg_param"], maxIter=params["max_iter"],
                  alpha=params["alpha"], implicitPrefs=implicit, seed=params["seed"],
                  userCol=USER_COL, itemCol=ITEM_COL, ratingCol=RATING_COL, coldStartStrategy="nan")
        blocks = spark.conf.get(ALS_BLOCKS_CONF, None)
        if blocks:
            als.setNumBlocks(int(blocks))
        if params["biases"]:
            # folded factors become an ALSModel through Spark's save layout (recsys.models.als_layout)
            folded = with_biases(als.fit(fallback.cached_residuals(train)), fallback)
            where = os.path.join(tempfile.mkdtemp(prefix="hand-als-"), "als")
            write_als_model(where, folded, {"userCol": USER_COL, "itemCol": ITEM_COL,
                                            "predictionCol": "prediction", "coldStartStrategy": "nan"})
            model = ALSModel.load(where)
            model.userFactors.cache().count(), model.itemFactors.cache().count()
        else:
            model = als.fit(train)
            model.userFactors.cache().count(), model.itemFactors.cache().count()
        done("fit")

        if not implicit:
            step = "rmse"
            pred = (model.transform(validation.select(USER_COL, ITEM_COL, RATING_COL))
                    .withColumnRenamed("prediction", "_als"))
            clipped = F.least(F.greatest(F.col("_als"), F.lit(MIN_RATING)), F.lit(MAX_RATING))
            scored = fallback.predict(pred).withColumn(
                "prediction", F.when(F.isnan("_als"), F.col("prediction")).otherwise(clipped).cast("double"))
            evaluator = RegressionEvaluator(metricName="rmse", labelCol=RATING_COL)
            out["metrics"]["rmse"] = evaluator.evaluate(scored)
            done("rmse")

        step = "max_seen"
        relevant = validation.filter(F.col(RATING_COL) >= threshold)
        users = relevant.select(USER_COL).distinct()
        max_seen = (train.join(users, USER_COL, "left_semi").groupBy(USER_COL).count()
                    .agg(F.max("count")).first()[0] or 0)
        out["notes"].append(f"k + max seen = {k + max_seen}")
        done("max_seen")

        step = "recommendForUserSubset + seen removal + top k"
        recs = model.recommendForUserSubset(users, k + int(max_seen))
        exploded = recs.select(USER_COL, F.explode("recommendations").alias("_r")).select(
            USER_COL, F.col(f"_r.{ITEM_COL}").alias(ITEM_COL), F.col("_r.rating").alias("_score"))
        unseen = exploded.join(train.select(USER_COL, ITEM_COL), [USER_COL, ITEM_COL], "left_anti")
        order = Window.partitionBy(USER_COL).orderBy(F.col("_score").desc(), F.col(ITEM_COL).asc())
        top = unseen.withColumn("_pos", F.row_number().over(order)).filter(F.col("_pos") <= k).cache()
        lists = top.groupBy(USER_COL).agg(
            F.sort_array(F.collect_list(F.struct("_pos", F.col(ITEM_COL).cast("double").alias("_m"))))
            .getField("_m").alias("prediction"))
        labels = relevant.groupBy(USER_COL).agg(F.collect_set(F.col(ITEM_COL).cast("double")).alias("label"))
        no_list = F.array().cast("array<double>")
        data = (labels.join(lists, USER_COL, "left")
                .select(F.coalesce("prediction", no_list).alias("prediction"), "label")
                .cache())
        data.count()
        done("top_k")

        step = "RankingEvaluator"
        for key, name in RANKING.items():
            out["metrics"][key] = RankingEvaluator(metricName=name, k=k).evaluate(data)
        data.unpersist()
        done("ranking_evaluator")
        if trial_metrics and any(abs(out["metrics"][key] - trial_metrics.get(f"val_{key}", value)) > 1e-6
                                 for key, value in out["metrics"].items()):
            out["notes"].append(list_differences(model, top, users, train, k))  # not timed
        top.unpersist()
        model.userFactors.unpersist(), model.itemFactors.unpersist()
    except Exception as exc:  # a cancelled job surfaces as a Py4J / Spark error
        # cancelled at the limit, or failed (e.g. out of memory or disk): a finding either way
        what = "cancelled" if time.time() - start >= timeout * 0.99 else "failed"
        out["stopped"] = step
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        out["notes"].append(f"{what} after {time.time() - start:.0f}s in step '{step}' "
                            f"({type(exc).__name__}{': ' + first if what == 'failed' else ''})")
    finally:
        timer.cancel()
        sc.setJobGroup("", "")
    out["total"] = time.time() - start
    return out


def capped_space(source: str, max_rank: int, dest: str) -> str:
    """A copy of the search space file with every ``rank`` bound capped at ``max_rank``."""
    import yaml

    with open(source) as fh:
        space = yaml.safe_load(fh)
    for section in space.values():
        if "rank" in section:
            section["rank"]["high"] = min(section["rank"]["high"], max_rank)
            section["rank"]["low"] = min(section["rank"]["low"], max_rank)
    with open(dest, "w") as fh:
        yaml.safe_dump(space, fh)
    return dest


def main(argv=None, rows_out: list | None = None) -> int:
    """Run the comparison; ``rows_out``, when given, receives one dict per trial (for tests)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split-dir", default="outputs/split")
    parser.add_argument("--data", default="bundled")
    parser.add_argument("--feedback", default="explicit")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--max-iter", type=int, default=10)
    parser.add_argument("--max-rank", type=int, default=32)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--relevance-threshold", type=float, default=4.0)
    parser.add_argument("--hand-timeout", type=float, default=1800.0,
                        help="seconds after which a hand-written trial is cancelled")
    parser.add_argument("--no-hand", action="store_true",
                        help="the search's trials only (fit, evaluation, logging), no hand-written route")
    parser.add_argument("--spark-master", default="")
    parser.add_argument("--spark-conf", action="append", default=[])
    parser.add_argument("--out", default="", help="also write the table (markdown) to this file")
    args = parser.parse_args(argv)

    tmp = tempfile.mkdtemp(prefix="recsys-bench-")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
    import mlflow

    exp = mlflow.create_experiment("bench", artifact_location=os.path.join(tmp, "artifacts"))
    os.environ["MLFLOW_EXPERIMENT_ID"] = exp

    from pyspark.ml.recommendation import ALS

    from recsys import jobs
    from recsys.core.constants import ITEM_COL, RATING_COL, USER_COL
    from recsys.models import ALSConfig
    from recsys.search import DEFAULT_SPACE, resolve_space_path

    space = capped_space(resolve_space_path(DEFAULT_SPACE), args.max_rank,
                         os.path.join(tmp, "space.yaml"))
    from recsys.mlops import spark_session
    spark = spark_session(args.spark_master, tuple(args.spark_conf))
    jobs.ensure_split(spark, args.data, args.split_dir)  # make the default split if missing
    split_copy = os.path.join(tmp, "split")
    shutil.copytree(args.split_dir, split_copy, ignore=shutil.ignore_patterns("_searches"))
    loaded, train, validation, fallback = jobs.cached_split(spark, args.data, split_copy)
    counts = loaded.manifest["counts"]["train"]
    print(f"train: {counts['rows']:,} ratings, {counts['users']:,} users, {counts['items']:,} movies",
          flush=True)

    start = time.time()
    warm = ALS(rank=10, maxIter=args.max_iter, implicitPrefs=args.feedback == "implicit", seed=42,
               userCol=USER_COL, itemCol=ITEM_COL, ratingCol=RATING_COL, coldStartStrategy="nan").fit(train)
    warm.transform(validation).agg({"prediction": "avg"}).first()
    warm_seconds = time.time() - start

    start = time.time()
    jobs.als_search(data=args.data, split_dir=split_copy, feedback=args.feedback, max_evals=args.trials,
                    max_iter=args.max_iter, k=args.k, relevance_threshold=args.relevance_threshold,
                    space=space)
    search_seconds = time.time() - start
    client = mlflow.MlflowClient()
    children = client.search_runs([exp], "tags.`recsys.stage` = 'als_trial'")
    children.sort(key=lambda r: int(r.data.tags["recsys.trial"]))
    # a trial's wall time as the search measured it (its run opened to closed); not the run's
    # end time, which moves when the search reopens the best trial's run to log test metrics
    [state] = glob.glob(os.path.join(split_copy, "_searches", "*", "state.json"))
    with open(state) as fh:
        trial_seconds = [rec["seconds"] for rec in json.load(fh)["trials"]]

    rows, cancelled = [], None
    for run in children:
        config = ALSConfig(**{f: run.data.params[f] for f in ALSConfig.field_names()})  # strings ok
        if cancelled is not None or args.no_hand:  # (the same route on the same data: it would be
            # cancelled again)
            why = "--no-hand" if args.no_hand else "an earlier hand-written trial was cancelled"
            hand = {"total": float("nan"), "seconds": {}, "stopped": "not run", "metrics": {},
                    "notes": [f"not run: {why}"]}
        else:
            print(f"hand-written trial: rank {config.rank}, reg_param {config.reg_param:.4g}", flush=True)
            hand = hand_written_trial(spark, config.as_params(), train, validation, fallback, args.k,
                                      args.relevance_threshold, args.hand_timeout, run.data.metrics)
            if hand["stopped"]:
                cancelled = hand
        m = run.data.metrics
        trial_s = trial_seconds[int(run.data.tags["recsys.trial"])]
        diffs = [abs(m[f"val_{key}"] - hand["metrics"][key]) for key in METRICS if key in hand["metrics"]
                 and f"val_{key}" in m]
        rows.append({"rank": config.rank, "reg": config.reg_param, "trial": trial_s,
                     "fit": m["fit_seconds"], "eval": m["eval_seconds"],
                     "log": trial_s - m["fit_seconds"] - m["eval_seconds"], "hand": hand["total"],
                     "hand_fit": hand["seconds"].get("fit", float("nan")),
                     "hand_steps": hand["seconds"], "stopped": hand["stopped"], "notes": hand["notes"],
                     "diff": max(diffs) if diffs and not hand["stopped"] else float("nan"),
                     "metrics": {key: (m.get(f"val_{key}"), hand["metrics"].get(key)) for key in METRICS}})

    lines = [f"warm-up ALS fit + transform: {warm_seconds:.1f}s; "
             f"search of {len(rows)} trials: {search_seconds:.1f}s",
             "| trial | rank | reg_param | trial s | fit | evaluation | logging | hand-written s | hand fit "
             "| hand steps | trial / hand | eval / fit | log / fit | max metric diff |",
             "| ---: " * 9 + "| --- " + "| ---: " * 4 + "|"]
    for i, r in enumerate(rows):
        steps = ", ".join(f"{name} {s:.1f}" for name, s in r["hand_steps"].items() if name != "fit")
        stopped = " (stopped)" if r["stopped"] else ""
        hand_s = "not run" if args.no_hand else f"{r['hand']:.1f}{stopped}"
        if r["stopped"]:
            steps += f"; {'; '.join(r['notes'])}"
        else:
            steps += f" ({'; '.join(r['notes'])})"
        lines.append(f"| {i} | {r['rank']} | {r['reg']:.3g} | {r['trial']:.1f} | {r['fit']:.1f} | "
                     f"{r['eval']:.1f} | {r['log']:.1f} | {hand_s} | "
                     f"{r['hand_fit']:.1f} | {steps} | {r['trial'] / r['hand']:.2f} | "
                     f"{r['eval'] / r['fit']:.2f} | {r['log'] / r['fit']:.2f} | {r['diff']:.1e} |")

    def summary(name, values):
        return f"{name}: median {statistics.median(values):.2f}, range {min(values):.2f}-{max(values):.2f}"

    finished = [r for r in rows if not r["stopped"]]
    lines.append(summary("trial wall time s", [r["trial"] for r in rows]) + "; "
                 + summary("fit s", [r["fit"] for r in rows]) + "; "
                 + summary("evaluation s", [r["eval"] for r in rows]) + "; "
                 + summary("logging s", [r["log"] for r in rows]))
    if finished:
        lines.append(summary("ratio trial / hand-written", [r["trial"] / r["hand"] for r in finished])
                     + " (target <= 1.0)")
        lines.append("max metric difference (rmse, precision, recall, ndcg, map at k): "
                     f"{max(r['diff'] for r in finished):.2e} (target <= 1e-6)")
    elif args.no_hand:
        lines.append("ratio trial / hand-written: not measured (--no-hand)")
    else:
        lines.append("ratio trial / hand-written: no hand-written trial finished within "
                     f"{args.hand_timeout:.0f}s; trial / time spent before the cancel: "
                     + summary("", [r["trial"] / r["hand"] for r in rows if r["hand"] == r["hand"]]))
    lines.append(summary("ratio evaluation / fit", [r["eval"] / r["fit"] for r in rows])
                 + " (target <= 0.5 at 10M)")
    lines.append(summary("ratio logging / fit", [r["log"] / r["fit"] for r in rows])
                 + " (target <= 0.25 at 1M)")
    for i, r in enumerate(rows):
        lines.append(f"trial {i} metrics (search, hand-written): "
                     + ", ".join(f"{key} {a!r} / {b!r}" for key, (a, b) in r["metrics"].items()))
    text = "\n".join(lines)
    print(text, flush=True)
    if args.out:
        with open(args.out, "a") as fh:
            when = time.strftime("%Y-%m-%d %H:%M")
            fh.write(f"\n## {args.data} ({counts['rows']:,} training ratings), {when}\n\n")
            fh.write(text + "\n")
    shutil.rmtree(tmp, ignore_errors=True)
    if rows_out is not None:
        rows_out.extend(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
