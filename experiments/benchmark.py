"""Opt-in benchmark: wall time and peak memory of each stage at several data sizes.

    python experiments/benchmark.py --scales 0.1M,1M --stages split
    python experiments/benchmark.py --scales 10M,33.8M            # every available stage

For each scale it generates a synthetic MovieLens release shaped like ml-latest
(``recsys.data.synthetic.scaled_config``: ~102 ratings per user, movies ~ ratings^0.4; 33.8M is
ml-latest's own size) or reuses one cached under ``--work-dir`` by its parameters, then runs
each stage as a subprocess, ``python -m recsys <stage> --data <release> --split-dir <dir>``,
with its own MLflow store (``sqlite`` in a temporary folder) and its own Parquet cache, so:

- ``synthesize`` (only when the release is generated, not reused): the generator.
- ``split``: the first read of the release (validation + conversion to Parquet) and the
  default random 80/10/10 split.
- ``baseline``, ``als`` (one trial), ``twins``: with their commands' default parameters on
  that split; skipped, with a note, when ``python -m recsys --help`` does not list them.

Peak memory is the largest sum of anonymous resident memory (``RssAnon + RssShmem``) over the
stage's whole process tree (Python driver, JVM, Python workers), polled every 0.5 s from /proc,
with each part's own peak and the peak of file-backed resident pages (page cache mapped by the
processes) beside it. Rows without that breakdown were measured by an earlier version as the
plain RSS sum, file-backed pages included. Results are merged into
``experiments/results/benchmark.csv`` (one row per scale and stage; a later run replaces its
own rows), with ``benchmark.md`` and ``benchmark.png`` (log-log time against ratings) redrawn
from all rows.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
STAGES = ("split", "baseline", "als", "twins")
#: Side-by-side comparisons on the same scale's split (opt-in: ``--stages ...,overhead``). Each
#: row's note carries the ratio its script or log reports.
COMPARISONS = ("overhead", "topk", "twins_recall", "twins_approx")
#: approxSimilarityJoin's hash tables for the same guarantee as the default banding: a pair of
#: Jaccard 0.5 is a candidate with probability 1 - 0.5**7 = 0.992 (banding: 42 x 3 -> 0.99+).
APPROX_TABLES = 7
FIELDS = ["scale", "ratings", "users", "movies", "stage", "seconds", "peak_rss_mb", "peak_detail", "status",
          "load_avg", "note", "command", "when"]
POLL_SECONDS = 0.5


def parse_scale(text: str) -> int:
    """``0.1M`` -> 100000, ``33.8M`` -> 33800000 (33.8M means ml-latest's 33,832,162), ``500k``."""
    text = text.strip().upper()
    if text in ("33.8M", "FULL"):
        return 33_832_162
    match = re.fullmatch(r"([0-9]*\.?[0-9]+)([KM]?)", text)
    if not match:
        raise SystemExit(f"--scales: {text!r} is not a size like 0.1M, 1M, 500k or 33.8M")
    return round(float(match.group(1)) * {"": 1, "K": 1_000, "M": 1_000_000}[match.group(2)])


# ---------------------------------------------------------------- measuring a process tree


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read().decode("ascii", "replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def _rss_bytes(pid: int) -> tuple[int, int]:
    """``(anonymous, file-backed)`` resident bytes of ``pid``. Anonymous (``RssAnon + RssShmem``)
    is what the process allocated. File-backed pages (memory-mapped files, e.g. blocks Spark
    reads back from disk) belong to the kernel's page cache, which it frees under pressure, so
    they are reported apart."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            f = {k: int(v.split()[0]) * 1024 for k, v in (line.split(":", 1) for line in fh)
                 if k in ("RssAnon", "RssShmem", "RssFile")}
        return f.get("RssAnon", 0) + f.get("RssShmem", 0), f.get("RssFile", 0)
    except (OSError, ValueError):
        return 0, 0


def _kind(pid: int, root: int) -> str:
    """Which part of a stage a process is: the JVM, the Python driver, or Python workers."""
    if pid == root:
        return "driver"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmd = fh.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return "other"
    if "java" in cmd.split(" ", 1)[0]:
        return "jvm"
    return "workers" if "pyspark.daemon" in cmd or "pyspark.worker" in cmd else "other"


def tree_rss(root: int, by_kind: dict | None = None) -> tuple[int, int]:
    """``(anonymous, file-backed)`` resident bytes of ``root`` and all its descendants;
    ``by_kind`` gets the anonymous sums per :func:`_kind`."""
    children = _children_map()
    anon = file = 0
    stack, seen = [root], set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        a, f = _rss_bytes(pid)
        anon, file = anon + a, file + f
        if by_kind is not None:
            kind = _kind(pid, root)
            by_kind[kind] = by_kind.get(kind, 0) + a
        stack.extend(children.get(pid, ()))
    return anon, file


def run_measured(cmd: list[str], env: dict, cwd: str, log_path: Path, timeout: float) -> dict:
    """Run ``cmd``; return wall seconds, the peak anonymous resident memory of its process tree
    (MB), each part's own peak (JVM, Python driver, Python workers) and the peak of file-backed
    resident pages, exit status and the log's tail."""
    load = os.getloadavg()[0]
    start = time.time()
    peak = peak_file = 0
    peaks: dict[str, int] = {}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        status = None
        while status is None:
            kinds: dict[str, int] = {}
            anon, file = tree_rss(proc.pid, kinds)
            peak, peak_file = max(peak, anon), max(peak_file, file)
            for kind, rss in kinds.items():
                peaks[kind] = max(peaks.get(kind, 0), rss)
            try:
                status = proc.wait(timeout=POLL_SECONDS)
            except subprocess.TimeoutExpired:
                if time.time() - start > timeout:
                    os.killpg(proc.pid, 9)  # the stage's own process group only
                    proc.wait()
                    status = "timeout"
    seconds = time.time() - start
    tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
    detail = ", ".join(f"{k} {round(v / 2**20)}" for k, v in sorted(peaks.items()) if v)
    detail += f"; file-backed {round(peak_file / 2**20)}"
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(peak / 2**20), "peak_detail": detail,
            "status": "ok" if status == 0 else f"failed ({status})", "tail": tail, "load_avg": round(load, 1)}


# ---------------------------------------------------------------- the benchmark


def available_commands(env: dict) -> set[str]:
    out = subprocess.run([sys.executable, "-m", "recsys", "--help"], env=env, capture_output=True,
                         text=True, check=True).stdout
    section = out.split("Commands:", 1)[-1]
    return {line.split()[0] for line in section.splitlines() if line.strip()}


def command_options(env: dict, command: str) -> set[str]:
    out = subprocess.run([sys.executable, "-m", "recsys", command, "--help"], env=env,
                         capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"(--[a-z][\w-]*)", out))


def release_for(config, work_dir: Path) -> Path:
    """Cache location of a release: named by its parameters."""
    from recsys.data import GENERATOR_VERSION

    params = json.dumps({**config.as_params(), "generator_version": GENERATOR_VERSION}, sort_keys=True)
    key = hashlib.sha256(params.encode()).hexdigest()[:10]
    return work_dir / "data" / f"ml-synth-{config.n_ratings}-{key}"


def load_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def write_reports(rows: list[dict], results: Path) -> None:
    rows = sorted(rows, key=lambda r: (int(r["ratings"] or 0), r["stage"]))
    with open(results / "benchmark.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| scale | ratings | users | movies | stage | wall time (s) | peak memory (MB) | of which (MB, "
             "each part's own peak) | status | load |",
             "| --- | ---: | ---: | ---: | --- | ---: | ---: | --- | --- | ---: |"]
    for r in rows:
        lines.append(f"| {r['scale']} | {int(r['ratings']):,} | {int(r['users']):,} | {int(r['movies']):,} | "
                     f"{r['stage']} | {r['seconds']} | {r['peak_rss_mb']} | "
                     f"{r.get('peak_detail') or 'plain RSS sum, file-backed included (earlier method)'} | "
                     f"{r['status']} | "
                     f"{r.get('load_avg') or ''} |")
    notes = [f"- {r['scale']} {r['stage']}: {r['note']}" for r in rows if r.get("note")]
    text = ("# Benchmark results\n\nWritten by `experiments/benchmark.py` (see experiments/README.md). "
            "`load`: the machine's 1-minute load average when the stage started.\n\n"
            + "\n".join(lines) + "\n" + ("\nNotes:\n" + "\n".join(notes) + "\n" if notes else ""))
    (results / "benchmark.md").write_text(text)
    from recsys.mlops import benchmark_times

    ok = [dict(r, ratings=int(r["ratings"]), seconds=float(r["seconds"]))  # comparisons: table only
          for r in rows if r["status"] == "ok" and r["stage"] in STAGES + ("synthesize",)]
    benchmark_times(ok, str(results / "benchmark.png"))


def comparison_command(stage: str, release: Path, split_dir: Path, trials: int = 3) -> list[str]:
    """The command of a comparison stage (scripts under experiments/, or twins with options)."""
    here = ROOT / "experiments"
    if stage == "overhead":
        return [sys.executable, str(here / "bench_trial_overhead.py"), "--data", str(release),
                "--split-dir", str(split_dir), "--trials", str(trials)]
    if stage == "topk":
        return [sys.executable, str(here / "bench_topk.py"), "--data", str(release),
                "--split-dir", str(split_dir), "--repeat", "1"]
    if stage == "twins_recall":  # the default banded method, with the exact top (in blocks) for recall
        return [sys.executable, str(here / "twins_recall.py"), "--data", str(release)]
    # the same script and exact reference, with approxSimilarityJoin's candidates
    return [sys.executable, str(here / "twins_recall.py"), "--data", str(release),
            "--method", "approx_join", "--n-hashes", str(APPROX_TABLES)]


def comparison_note(stage: str, log: str) -> str:
    """The figures a comparison stage printed: its ratio lines, or twins' candidates and recall."""
    lines = log.splitlines()
    if stage == "overhead":
        keep = [ln for ln in lines if ln.startswith(("trial wall time", "ratio", "max metric", "warm-up"))]
    elif stage == "topk":
        keep = [ln for ln in lines if ln.startswith(("| blocked", "| naive", "| slack", "naive /"))]
    else:
        keep = [ln.replace("[twins] ", "") for ln in lines
                if re.search(r"candidate pairs in|first pass|exact Jaccard of candidates|exact \(blocked|"
                             r"recall (of|against)", ln)]
    return "; ".join(k.strip() for k in keep)


def failure_reason(log: str) -> str:
    """The first error line of a failed stage's log (a Java stack trace's tail says nothing)."""
    for line in log.splitlines():
        if re.search(r"(Error|Exception)\b.*:|^Error:", line) and not line.lstrip().startswith("at "):
            return "failed: " + line.strip()[:300]
    return ""


def record(rows: dict, ctx: dict, stage: str, result: dict, cmd: list, note: str = "") -> None:
    """Store one stage's measurement (replacing an older one) and redraw the reports."""
    stats_file = ctx["release"] / "synthetic_stats.json"
    stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
    config, label = ctx["config"], ctx["label"]
    rows[(label, stage)] = {
        "scale": label, "ratings": stats.get("ratings", config.n_ratings),
        "users": stats.get("users", config.n_users), "movies": config.n_movies,
        "stage": stage, "seconds": result.get("seconds", ""),
        "peak_rss_mb": result.get("peak_rss_mb", ""), "peak_detail": result.get("peak_detail", ""),
        "status": result.get("status", "skipped"),
        "load_avg": result.get("load_avg", ""), "note": note, "command": " ".join(cmd), "when": ctx["when"]}
    print(f"[benchmark] {label} {stage}: {result.get('status', 'skipped')} "
          f"{result.get('seconds', '')}s peak {result.get('peak_rss_mb', '')} MB "
          f"({result.get('peak_detail', '')}) {note}", flush=True)
    write_reports(list(rows.values()), ctx["results"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", default="0.1M,1M", help="ratings per run, e.g. 0.1M,1M,10M,33.8M")
    parser.add_argument("--stages", default=",".join(STAGES),
                        help=f"comma-separated subset of {','.join(STAGES)}, plus the comparisons "
                             f"{','.join(COMPARISONS)} (they need a split: list split first or "
                             "with --keep); 'none' = only generate")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--work-dir", default=str(ROOT / "outputs" / "benchmark"),
                        help="cached releases and per-run scratch (splits, MLflow store)")
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--spark-master", default="", help="passed to every stage (default local[*])")
    parser.add_argument("--spark-conf", action="append", default=[], metavar="KEY=VALUE",
                        help="passed to every stage, e.g. spark.driver.memory=12g")
    parser.add_argument("--overhead-trials", type=int, default=3, help="search trials of the overhead stage")
    parser.add_argument("--timeout", type=float, default=4 * 3600, help="seconds per stage")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder of each scale")
    args = parser.parse_args(argv)

    from recsys.data import scaled_config

    stages = [s.strip() for s in args.stages.split(",") if s.strip() and s.strip() != "none"]
    unknown = [s for s in stages if s not in STAGES + COMPARISONS]
    if unknown:
        parser.error(f"--stages: unknown {', '.join(unknown)}; allowed: {', '.join(STAGES + COMPARISONS)}")
    work_dir = Path(args.work_dir).resolve()
    results = Path(args.results).resolve()
    results.mkdir(parents=True, exist_ok=True)
    (work_dir / "data").mkdir(parents=True, exist_ok=True)
    base_env = dict(os.environ, PYTHONUNBUFFERED="1",
                    PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    commands = available_commands(base_env)
    spark_args = []
    if args.spark_master:
        spark_args += ["--spark-master", args.spark_master]
    for conf in args.spark_conf:
        spark_args += ["--spark-conf", conf]

    rows = {(r["scale"], r["stage"]): r for r in load_rows(results / "benchmark.csv")}
    machine = f"{platform.node()} {os.cpu_count()} cores"
    for label in [s.strip() for s in args.scales.split(",") if s.strip()]:
        n_ratings = parse_scale(label)
        config = scaled_config(n_ratings, seed=args.seed)
        release = release_for(config, work_dir)
        scratch = Path(tempfile.mkdtemp(prefix=f"bench-{label}-", dir=work_dir))
        env = dict(base_env, MLFLOW_TRACKING_URI=f"sqlite:///{scratch / 'mlflow.db'}",
                   RECSYS_CACHE_DIR=str(scratch / "cache"))
        when = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        ctx = {"label": label, "release": release, "config": config,
               "when": f"{when} on {machine}", "results": results}
        if not (release / "synthetic_stats.json").exists():
            if release.exists():
                shutil.rmtree(release)
            cmd = [sys.executable, "-m", "recsys", "synthesize", "--output", str(release),
                   "--n-users", str(config.n_users), "--n-movies", str(config.n_movies),
                   "--n-ratings", str(config.n_ratings), "--seed", str(config.seed),
                   "--rank", str(config.rank), "--noise", str(config.noise),
                   "--n-twins", str(config.n_twins), *spark_args]
            print(f"[benchmark] {label}: generating {release.name}", flush=True)
            result = run_measured(cmd, env, str(scratch), scratch / "synthesize.log", args.timeout)
            if result["status"] != "ok":
                record(rows, ctx, "synthesize", result, cmd, note=" / ".join(result["tail"]))
                continue
            gen = json.loads((release / "synthetic_stats.json").read_text())
            record(rows, ctx, "synthesize", result, cmd,
                   note=f"ratings generated in {gen['generate_seconds']}s, in-process {gen['seconds']}s")
        else:
            print(f"[benchmark] {label}: reusing {release}", flush=True)

        split_dir = scratch / "split"
        first_read = True  # the scratch's Parquet cache is empty: the first stage to read converts
        for stage in stages:
            if stage in COMPARISONS:
                # the scripts take --spark-master only; twins takes every Spark option
                extra = spark_args if stage.startswith("twins") else spark_args[:2] * bool(args.spark_master)
                cmd = comparison_command(stage, release, split_dir, args.overhead_trials) + extra
                result = run_measured(cmd, env, str(scratch), scratch / f"{stage}.log", args.timeout)
                log = (scratch / f"{stage}.log").read_text(errors="replace")
                note = comparison_note(stage, log)
                if result["status"] != "ok":  # what it measured before failing, and why it failed
                    note = "; ".join(filter(None, [note, failure_reason(log) or " / ".join(result["tail"])]))
                if first_read and stage.startswith("twins"):  # the others read the split
                    note = f"includes the first read; {note}"
                    first_read = False
                record(rows, ctx, stage, result, cmd, note=note)
                continue
            if stage not in commands:
                record(rows, ctx, stage, {}, [], note=f"no `python -m recsys {stage}` command yet: skipped")
                continue
            options = command_options(env, stage)
            cmd = [sys.executable, "-m", "recsys", stage]
            if "--data" in options:
                cmd += ["--data", str(release)]
            if "--split-dir" in options:
                cmd += ["--split-dir", str(split_dir)]
            cmd += spark_args
            result = run_measured(cmd, env, str(scratch), scratch / f"{stage}.log", args.timeout)
            note = "" if result["status"] == "ok" else " / ".join(result["tail"])
            if first_read and "--data" in options:
                note = note or "includes the first read: validation + conversion to Parquet"
                first_read = False
            record(rows, ctx, stage, result, cmd, note=note)
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"[benchmark] results in {results}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
