"""Hyperopt TPE against Optuna TPE on the same budget: the best validation objective after N trials.

    python experiments/compare_backends.py [--trials 20] [--seeds 3] [--feedback explicit,implicit]
        [--backends hyperopt,optuna] [--out experiments/results] [--split-dir outputs/split]
        [--data bundled] [--max-iter 10] [--space default]
        [--state-dir outputs/compare_backends] [--spark-master ...]

For every feedback mode x backend x seed (seeds 42, 43, ... : the search's seed, which also seeds
every ALS fit, so both backends fit the same models for the same proposals) it runs one search
with ``recsys.search.run_search`` on the split (the bundled data's default split unless told
otherwise; made if missing), in one Spark session, with the split read and its bias fallback
fitted once. A trial is what an ``als_search`` trial computes (``jobs.fit_and_judge``: ALS fit,
RMSE and top-K metrics on validation) without MLflow: no runs, no model logging, so the numbers
are the search's, not the tracking store's.

Writes ``<out>/backends.csv`` (one row per trial: feedback, objective, backend, seed, trial,
the trial's objective value, the best so far, its params and seconds) and ``<out>/backends.md``
(median and range over the seeds of the best objective after 5, 10 and N trials). Search states
go to ``<state-dir>/<search key>/state.json``: an interrupted comparison, run again, resumes each
search where it stopped (same proposals, see recsys/search/run.py) instead of starting over.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time

CHECKPOINTS = (5, 10)
FIELDS = ["feedback", "objective", "backend", "seed", "trial", "status", "value", "best_so_far",
          "rank", "reg_param", "alpha", "seconds"]


def _csv_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_args(argv=None):
    from recsys.core.constants import DEFAULT_SEED
    from recsys.search import BACKENDS, DEFAULT_SPACE, FEEDBACK_MODES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="trials per search")
    parser.add_argument("--seeds", type=int, default=3, help=f"number of seeds ({DEFAULT_SEED}, ...)")
    parser.add_argument("--feedback", default=",".join(FEEDBACK_MODES))
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--out", default="experiments/results", help="folder of backends.csv/.md")
    parser.add_argument("--data", default="bundled")
    parser.add_argument("--split-dir", default="outputs/split")
    parser.add_argument("--max-iter", type=int, default=10)
    parser.add_argument("--space", default=DEFAULT_SPACE)
    parser.add_argument("--state-dir", default="outputs/compare_backends")
    parser.add_argument("--spark-master", default="")
    args = parser.parse_args(argv)
    for name, allowed in (("feedback", FEEDBACK_MODES), ("backends", BACKENDS)):
        bad = [v for v in _csv_list(getattr(args, name)) if v not in allowed]
        if bad or not _csv_list(getattr(args, name)):
            parser.error(f"--{name} {getattr(args, name)!r}: allowed values are {', '.join(allowed)}")
    if args.trials < 1 or args.seeds < 1:
        parser.error("--trials and --seeds must be >= 1")
    args.seed_list = [DEFAULT_SEED + i for i in range(args.seeds)]
    return args


def run_one(spark, split, args, feedback: str, backend: str, seed: int, progress) -> list[dict]:
    """One search; its CSV rows (one per trial, in order)."""
    from recsys import jobs
    from recsys.core import released_models
    from recsys.evaluation import HeldOut
    from recsys.search import (
        SearchConfig,
        load_space,
        run_search,
        search_key,
    )

    loaded, train, validation, fallback = split
    config = SearchConfig(feedback=feedback, max_evals=args.trials, max_iter=args.max_iter, seed=seed,
                          backend=backend)
    space = load_space(args.space, feedback)
    key = search_key(config, space, loaded.manifest.get("digests", {}))

    held = HeldOut(train, validation, k=config.k, relevance_threshold=config.relevance_threshold,
                   fallback=fallback).prepare(ratings=feedback == "explicit")

    def evaluate_trial(index, als):
        with released_models():
            recommender, metrics, _ = jobs.fit_and_judge(als, held)
            recommender.release()
        return {"metrics": metrics, "run_id": None}

    records = run_search(spark, config, space, evaluate_trial, key=key, progress=progress,
                         state_file=os.path.join(args.state_dir, key, "state.json"))
    held.release()
    objective, rows, best = config.objective_spec, [], None
    for i, rec in enumerate(records, start=1):
        value = rec["metrics"].get(objective.metric) if rec["status"] == "ok" else None
        if value is not None and (best is None or objective.better(value, best)):
            best = value
        params = rec["params"] or {}
        rows.append({"feedback": feedback, "objective": objective.metric, "backend": backend, "seed": seed,
                     "trial": i, "status": rec["status"], "value": value, "best_so_far": best,
                     "rank": params.get("rank"), "reg_param": params.get("reg_param"),
                     "alpha": params.get("alpha") if feedback == "implicit" else None,
                     "seconds": rec["seconds"]})
    return rows


def markdown(rows: list[dict], trials: int, args) -> str:
    """The table: per feedback and backend, median [min - max] over seeds of the best after n trials."""
    checkpoints = [n for n in CHECKPOINTS if n < trials] + [trials]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["feedback"], row["objective"], row["backend"]), []).append(row)
    seeds = sorted({r["seed"] for r in rows})
    head = ["feedback", "objective", "backend", "seeds",
            *[f"best after {n}" for n in checkpoints], "s / search (median)"]
    lines = [f"# Search backends: best validation objective after {trials} trials",
             "",
             f"`python experiments/compare_backends.py --trials {args.trials} --seeds {args.seeds} "
             f"--feedback {args.feedback} --backends {args.backends}` on split `{args.split_dir}` "
             f"(data `{args.data}`), ALS max_iter {args.max_iter}, space `{args.space}`; seeds "
             f"{', '.join(map(str, seeds))}. Each cell: median over the seeds [min - max]. rmse: lower "
             "is better; precision_at_k: higher is better.",
             "",
             "| " + " | ".join(head) + " |",
             "|" + "|".join("---" for _ in head) + "|"]
    for (feedback, objective, backend), group in sorted(groups.items()):
        cells = [feedback, objective, backend, str(len({r["seed"] for r in group}))]
        for n in checkpoints:
            values = [r["best_so_far"] for r in group if r["trial"] == n and r["best_so_far"] is not None]
            cells.append(f"{statistics.median(values):.4f} [{min(values):.4f} - {max(values):.4f}]"
                         if values else "n/a")
        per_search = {}
        for r in group:
            per_search[r["seed"]] = per_search.get(r["seed"], 0.0) + float(r["seconds"])
        cells.append(f"{statistics.median(per_search.values()):.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    from recsys import jobs

    def progress(message):
        print(message, file=sys.stderr, flush=True)

    from recsys.mlops import spark_session
    spark = spark_session(args.spark_master, ())
    split = jobs.cached_split(spark, args.data, args.split_dir)  # makes the default split if missing
    if "explicit" in _csv_list(args.feedback):
        split[3].cached_residuals(split[1])  # every explicit trial fits on these, as in als_search
    os.makedirs(args.out, exist_ok=True)
    rows: list[dict] = []
    started = time.time()
    for feedback in _csv_list(args.feedback):
        for backend in _csv_list(args.backends):
            for seed in args.seed_list:
                start = time.time()
                found = run_one(spark, split, args, feedback, backend, seed, progress)
                rows.extend(found)
                progress(f"[compare] {feedback} {backend} seed {seed}: best {found[-1]['best_so_far']} "
                         f"after {len(found)} trials ({time.time() - start:.0f}s; total "
                         f"{time.time() - started:.0f}s)")
                _write(rows, args)  # after every search: an interrupted run keeps its table
    with open(os.path.join(args.out, "backends.md"), encoding="utf-8") as fh:
        print(fh.read())
    return 0


def _write(rows: list[dict], args) -> None:
    with open(os.path.join(args.out, "backends.csv"), "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    with open(os.path.join(args.out, "backends.md"), "w", encoding="utf-8") as fh:
        fh.write(markdown(rows, args.trials, args))


if __name__ == "__main__":
    sys.exit(main())
