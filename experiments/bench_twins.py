"""Movie twins at scale, side by side in one run: each method's `twins` run against a one-core SciPy
exact reference, on both synthetic generators (issue 26).

    python experiments/bench_twins.py --scales 1M,10M --selections taste,popularity --repeats 3
    python experiments/bench_twins.py --scales 33.8M --methods exact --reference none

For each selection (``taste``: the default generator; ``popularity``: the old one) and scale, a
release shaped like ml-latest (``recsys.data.scaled_config``) is generated or reused from
``--work-dir`` (cached by its parameters, as ``benchmark.py`` does). Then, in this order:

1. **Reference**: the exact top ``--n-pairs`` among users with >= ``--min-ratings`` movies by
   blockwise sparse products ``X[block] @ X[block:].T`` in SciPy, one process, one core
   (``twins_recall.exact_top_blocked``: written without any of the project's twins code), with
   its time, the CSV read included.
2. **Each method** (``--methods``), ``--repeats`` times: ``python -m recsys twins --data <release>
   --method <m>`` as a subprocess with its own MLflow store (``banded`` also with
   ``--compare-exact true``, so it reports its recall). The duration is the MLflow run's end
   time minus its start time (reading and validating the data count); the Parquet cache of the
   release (under ``--work-dir``) is built by the first run that reads it and reused by later
   ones, as a user's later runs reuse it (that cold first run is marked and left out of
   medians). Peak anonymous resident memory of the JVM, the Python driver and the Python
   workers is polled from /proc every 0.5 s
   (``benchmark.run_measured``), with the 1-minute load average when the run started.
3. **Checks**: the run's ``twins.csv`` against the reference: the same Jaccards to 1e-12 at
   every rank and the same pairs up to ties at the last value (``equal``), and its recall.

Rows go to ``experiments/results/twins.csv`` (a later run replaces rows of the same selection,
scale, method and repeat) and ``twins.md`` is redrawn from all rows. Nothing is written into the
checkout but those two files; scratch goes under ``--work-dir``.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
FIELDS = ["selection", "scale", "ratings", "users_kept", "method", "repeat", "seconds", "wall_seconds",
          "cold", "candidates", "scored_exactly", "recall", "equal_to_reference", "last_jaccard",
          "peak_jvm_mb", "peak_workers_mb", "peak_driver_mb", "load_avg", "status", "note", "when"]


def _sibling(name: str):
    """Another script of experiments/, loaded by its path (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _peaks(detail: str) -> dict:
    """``"driver 120, jvm 900, workers 700; file-backed 50"`` -> ``{"driver": 120, ...}``."""
    parts = detail.split(";", 1)[0]
    return {k: int(v) for k, v in (p.strip().rsplit(" ", 1) for p in parts.split(",") if p.strip())}


def compare(found: list[dict], reference: list[dict]) -> tuple[bool, float]:
    """(same Jaccards at every rank and the same pairs but for ties at the last value, recall)."""
    if len(found) != len(reference):
        return False, 0.0
    same_values = all(abs(f["jaccard"] - r["jaccard"]) <= 1e-12
                      for f, r in zip(found, reference, strict=True))
    last = reference[-1]["jaccard"] if reference else 0.0
    above = {(r["userA"], r["userB"]) for r in reference if r["jaccard"] > last + 1e-12}
    got = {(f["userA"], f["userB"]) for f in found}
    recall = len(got & {(r["userA"], r["userB"]) for r in reference}) / max(1, len(reference))
    return same_values and above <= got, recall


def twins_run(uri: str) -> tuple[dict, list[dict]]:
    """The only twins run of the store ``uri``: (info and metrics, its twins.csv rows)."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    [run] = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run.info.run_id, "twins.csv", tmp)
        with open(path, newline="") as fh:
            rows = [{"userA": int(r["userA"]), "userB": int(r["userB"]), "jaccard": float(r["jaccard"])}
                    for r in csv.DictReader(fh)]
    seconds = (run.info.end_time - run.info.start_time) / 1000
    return {"status": run.info.status, "seconds": seconds, **run.data.metrics}, rows


def write_reports(rows: list[dict], results: Path) -> None:
    with open(results / "twins.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["# Movie twins at scale: each method against a one-core SciPy exact reference", "",
             "Made by `experiments/bench_twins.py` (its docstring says how); raw rows in `twins.csv`. "
             "Seconds: the MLflow run's start to end (data read included), median of the warm runs "
             "[min - max] (a cold run converts the release to Parquet first: left out when there are warm "
             "ones); the reference is one process on one core. Peak MB: the largest over the runs. `equal`: "
             "the run's top 100 has the reference's Jaccards at every rank and its pairs up to ties at the "
             "last value.", "",
             "| selection | scale | users kept | method | runs | seconds | / reference | equal | recall | "
             "candidates | scored exactly | JVM / workers peak MB | load avg |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["selection"], r["scale"], r["method"]), []).append(r)
    for (selection, scale, method), group in sorted(groups.items(), key=lambda g: (g[0][0], float(
            group_ratings(g[1])), g[0][2])):
        ok = [r for r in group if r["status"] == "ok"]
        if not ok:
            lines.append(f"| {selection} | {scale} | | {method} | 0 | failed: {group[-1]['note']} |"
                         " | | | | | | |")
            continue
        warm = [float(r["seconds"]) for r in ok if r["cold"] != "true"] or [float(r["seconds"]) for r in ok]
        secs = f"{statistics.median(warm):.1f} [{min(warm):.1f} - {max(warm):.1f}]" if len(warm) > 1 \
            else f"{warm[0]:.1f}"
        cold = sum(r["cold"] == "true" for r in ok)
        runs = f"{len(ok)} ({cold} cold)" if cold and len(ok) > cold else str(len(ok))
        ref = next((float(r["seconds"]) for r in rows if (r["selection"], r["scale"], r["method"])
                    == (selection, scale, "reference") and r["status"] == "ok"), None)
        ratio = f"{statistics.median(warm) / ref:.2f}" if ref and method != "reference" else ""
        last = ok[-1]
        lines.append(
            f"| {selection} | {scale} | {last['users_kept']} | {method} | {runs} | {secs} | {ratio} | "
            f"{last['equal_to_reference']} | {last['recall']} | {last['candidates']} | "
            f"{last['scored_exactly']} | "
            f"{_most(ok, 'peak_jvm_mb')} / {_most(ok, 'peak_workers_mb')} | "
            f"{', '.join(sorted({str(r['load_avg']) for r in ok}))} |")
    (results / "twins.md").write_text("\n".join(lines) + "\n")


def _most(rows: list[dict], field: str) -> str:
    values = [int(r[field]) for r in rows if str(r[field]).strip()]
    return str(max(values)) if values else ""


def group_ratings(group: list[dict]) -> str:
    return group[0]["ratings"] or "0"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", default="1M,10M", help="e.g. 1M,10M,33.8M")
    parser.add_argument("--selections", default="taste,popularity")
    parser.add_argument("--methods", default="exact,banded")
    parser.add_argument("--reference", default="1M,10M", help="scales that get the SciPy reference, or none")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-pairs", type=int, default=100)
    parser.add_argument("--min-ratings", type=int, default=20)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--n-twins", type=int, default=None,
                        help="planted near-duplicate users (default: scaled_config's n_users // 1000); "
                             "at 33.8M its 331 would fill the top 100 by themselves: give 0 there")
    parser.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "recsys-bench"))
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--spark-conf", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args(argv)

    bench = _sibling("benchmark")
    recall_script = _sibling("twins_recall")
    from recsys.data import scaled_config

    work_dir = Path(args.work_dir).resolve()
    (work_dir / "data").mkdir(parents=True, exist_ok=True)
    results = Path(args.results).resolve()
    results.mkdir(parents=True, exist_ok=True)
    path = results / "twins.csv"
    rows = []
    if path.exists():
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    key = ("selection", "scale", "method", "repeat")
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    spark_args = [a for conf in args.spark_conf for a in ("--spark-conf", conf)]
    with_reference = {s.strip() for s in args.reference.split(",")}

    def keep(row: dict) -> None:
        rows[:] = [r for r in rows if tuple(r[k] for k in key) != tuple(str(row[k]) for k in key)]
        rows.append({f: row.get(f, "") for f in FIELDS})
        write_reports(rows, results)
        print(f"[bench_twins] {json.dumps({f: row.get(f) for f in FIELDS if row.get(f) not in ('', None)})}",
              flush=True)

    for selection in [s.strip() for s in args.selections.split(",") if s.strip()]:
        for label in [s.strip() for s in args.scales.split(",") if s.strip()]:
            overrides = {} if args.n_twins is None else {"n_twins": args.n_twins}
            config = scaled_config(bench.parse_scale(label), seed=args.seed, selection=selection, **overrides)
            release = bench.release_for(config, work_dir)
            scratch = Path(tempfile.mkdtemp(prefix=f"twins-{selection}-{label}-", dir=work_dir))
            when = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            base = {"selection": selection, "scale": label, "when": when,
                    "note": f"{config.n_twins} planted twins"}
            if not (release / "synthetic_stats.json").exists():
                cmd = [sys.executable, "-m", "recsys", "synthesize", "--output", str(release),
                       "--n-users", str(config.n_users), "--n-movies", str(config.n_movies),
                       "--n-ratings", str(config.n_ratings), "--seed", str(config.seed),
                       "--n-twins", str(config.n_twins), "--selection", selection, *spark_args]
                print(f"[bench_twins] {selection} {label}: generating {release}", flush=True)
                done = bench.run_measured(cmd, dict(env, MLFLOW_TRACKING_URI=f"sqlite:///{scratch}/gen.db"),
                                          str(scratch), scratch / "synthesize.log", args.timeout)
                if done["status"] != "ok":
                    keep({**base, "method": "synthesize", "repeat": 0, "status": done["status"],
                          "note": " / ".join(done["tail"])})
                    continue
            base["ratings"] = json.loads((release / "synthetic_stats.json").read_text())["ratings"]
            reference = None
            if label in with_reference:
                print(f"[bench_twins] {selection} {label}: SciPy reference", flush=True)
                started = time.time()
                users, movies = recall_script.read_pairs(str(release))
                reference, stats = recall_script.exact_top_blocked(
                    users, movies, args.min_ratings, args.n_pairs, progress=lambda m: print(m, flush=True))
                del users, movies
                keep({**base, "method": "reference", "repeat": 0, "seconds": round(time.time() - started, 1),
                      "users_kept": stats["users_kept"], "scored_exactly": int(stats["pairs_scored"]),
                      "last_jaccard": reference[-1]["jaccard"] if reference else "", "status": "ok",
                      "note": f"scipy, one process; CSV read included; {config.n_twins} planted twins"})
            cache = work_dir / "cache" / release.name  # the release's Parquet cache: built by its first run
            for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
                for repeat in range(1, args.repeats + 1):
                    cold = not cache.exists()
                    uri = f"sqlite:///{scratch}/{method}-{repeat}.db"
                    cmd = [sys.executable, "-m", "recsys", "twins", "--data", str(release),
                           "--method", method, "--n-pairs", str(args.n_pairs),
                           "--min-ratings", str(args.min_ratings),
                           *(["--compare-exact", "true"] if method != "exact" else []), *spark_args]
                    print(f"[bench_twins] {selection} {label}: {method} run {repeat}", flush=True)
                    run_env = dict(env, MLFLOW_TRACKING_URI=uri, RECSYS_CACHE_DIR=str(cache))
                    done = bench.run_measured(cmd, run_env, str(scratch), scratch / f"{method}-{repeat}.log",
                                              args.timeout)
                    peaks = _peaks(done["peak_detail"])
                    row = {**base, "method": method, "repeat": repeat, "cold": str(cold).lower(),
                           "wall_seconds": done["seconds"], "load_avg": done["load_avg"],
                           "peak_jvm_mb": peaks.get("jvm", ""), "peak_workers_mb": peaks.get("workers", ""),
                           "peak_driver_mb": peaks.get("driver", ""), "status": done["status"]}
                    if done["status"] != "ok":
                        keep({**row, "note": " / ".join(done["tail"])})
                        continue
                    info, found = twins_run(uri)
                    row.update(seconds=round(info["seconds"], 1), users_kept=int(info["users_kept"]),
                               last_jaccard=found[-1]["jaccard"] if found else "",
                               candidates=int(info.get("exact_candidates", 0) if method == "exact"
                                              else info.get("candidate_pairs", 0)),
                               scored_exactly=int(info.get("exact_verified", 0) if method == "exact"
                                                  else info.get("scored_pairs", 0)),
                               recall=info.get("recall", 1.0 if method == "exact" else ""))
                    if reference is not None:
                        equal, recall = compare(found, reference)
                        row.update(equal_to_reference=str(equal).lower(), recall=round(recall, 4))
                    keep(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
