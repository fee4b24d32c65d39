"""Calibrate the synthetic generator against the bundled ml-latest-small (issue 26).

For the real data and for a synthetic release of the same size (610 users, 9,742 movies,
100,836 ratings; one per seed) it runs the project's own stages in this process, as the
``main`` entry point runs them: ``split`` with its defaults (random 80/10/10, seed 42), then
``als_search`` with ``feedback=implicit`` (objective precision_at_k), ``max_evals=8`` and the
default space (``recsys/search/default_space.yaml``). The search logs the popularity (count)
baseline on the same split, so popularity P@10 and the best trial's P@10 are both validation
numbers (the test numbers are printed too). On the whole ratings file it measures the
100th-best user-pair Jaccard of rated-movie sets among users with >= 20 ratings (exact: sparse
product of the user x movie incidence matrix), the number of such pairs with Jaccard >= 0.3,
mean ratings per user and the share of ratings >= 4.

``--one-million`` instead compares one implicit ALS (rank 20, reg_param 0.1, alpha 1, the
``als`` entry point) on ``scaled_config(1_000_000)`` releases of each ``--selections``.

Everything (releases, splits, MLflow store ``sqlite:///<workdir>/mlflow.db`` and its
artifacts, Spark's scratch) goes under ``--workdir`` (default: a new temporary folder); the
process works from there, so nothing is written into the checkout. Results are cached there
as ``<name>.json``: rerun with the same ``--workdir`` to add seeds without redoing the rest.

    .venv/bin/python experiments/calibrate_synthetic.py --seeds 42,7
    .venv/bin/python experiments/calibrate_synthetic.py --one-million --workdir /tmp/cal
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time

REAL = dict(n_users=610, n_movies=9742, n_ratings=100_836)
K = 10
MIN_RATINGS = 20  # users kept for the Jaccard statistics (ml-latest-small's minimum)
JACCARD_RANK = 100
JACCARD_FLOOR = 0.3
TOLERANCE = 0.25
ONE_MILLION_ALS = dict(rank=20, reg_param=0.1, alpha=1.0, implicit_prefs=True)


def ratings_frame(data: str | None):
    """(userId, movieId, rating) of a release as pandas (small data only)."""
    import io
    import zipfile

    import pandas as pd

    from recsys.data import bundled_source

    path = data or bundled_source()
    if path.endswith(".zip"):
        with zipfile.ZipFile(path) as zf:
            name = next(n for n in zf.namelist() if n.endswith("ratings.csv"))
            return pd.read_csv(io.BytesIO(zf.read(name)), usecols=["userId", "movieId", "rating"])
    return pd.read_csv(os.path.join(path, "ratings.csv"), usecols=["userId", "movieId", "rating"])


def set_statistics(ratings) -> dict:
    """Jaccard of rated-movie sets over every pair of users with >= MIN_RATINGS ratings (exact)."""
    import numpy as np
    import scipy.sparse as sp

    users = ratings["userId"].astype("category").cat.codes.to_numpy()
    movies = ratings["movieId"].astype("category").cat.codes.to_numpy()
    counts = np.bincount(users)
    kept = counts >= MIN_RATINGS
    incidence = sp.csr_matrix((np.ones(len(users), dtype=np.float64), (users, movies)))[kept]
    n = counts[kept].astype(np.float64)
    common = (incidence @ incidence.T).toarray()  # exact: counts of shared movies
    upper = np.triu_indices(len(n), 1)
    jaccard = common[upper] / (n[upper[0]] + n[upper[1]] - common[upper])
    ordered = np.sort(jaccard)[::-1]
    return {
        "users": int(len(counts)), "users_20": int(kept.sum()),
        "jaccard_100th": float(ordered[JACCARD_RANK - 1]) if len(ordered) >= JACCARD_RANK else float("nan"),
        "pairs_jaccard_03": int((jaccard >= JACCARD_FLOOR).sum()),
        "ratings_per_user": float(len(ratings) / len(counts)),
        "share_ge_4": float((ratings["rating"] >= 4.0).mean()),
        "rating_mean": float(ratings["rating"].mean()),
    }


def pipeline_statistics(data: str | None, split_dir: str, evals: int) -> dict:
    from recsys import jobs

    data = data or "bundled"
    jobs.split(data=data, split_dir=split_dir)
    search = jobs.als_search(data=data, split_dir=split_dir, feedback="implicit", max_evals=evals)
    metric = "precision_at_k"
    out = {
        "popularity_val_p10": search["baselines"][f"baseline_val_{metric}"],
        "popularity_test_p10": search["baselines"][f"baseline_test_{metric}"],
        "als_val_p10": search["val"][metric], "als_test_p10": search["test"][metric],
        "als_best_params": search["best_params"],
    }
    out["ratio_val"] = out["als_val_p10"] / out["popularity_val_p10"]
    out["ratio_test"] = out["als_test_p10"] / out["popularity_test_p10"]
    return out


def synthetic_release(workdir: str, config) -> tuple[str, dict]:
    from recsys.data import generate
    from recsys.mlops import spark_session

    name = f"synth-{config.selection}-{config.n_ratings}-seed{config.seed}"
    out = os.path.join(workdir, "data", name)
    if not os.path.exists(out):
        generate(spark_session("", ()), config, out, progress=print)
    with open(os.path.join(out, "synthetic_stats.json")) as fh:
        return out, json.load(fh)


def cached(workdir: str, name: str, compute) -> dict:
    path = os.path.join(workdir, f"{name}.json")
    if os.path.exists(path):
        with open(path) as fh:
            return json.load(fh)
    start = time.time()
    result = compute()
    result["seconds"] = round(time.time() - start, 1)
    with open(path, "w") as fh:
        json.dump(result, fh, indent=2, sort_keys=True)
    return result


ROWS = (  # (key, label, format)
    ("popularity_val_p10", "popularity P@10 (validation)", "{:.4f}"),
    ("ratio_val", "implicit ALS best P@10 / popularity P@10 (validation, 8 trials)", "{:.2f}"),
    ("jaccard_100th", "100th-best user-pair Jaccard (users >= 20 ratings)", "{:.3f}"),
    ("pairs_jaccard_03", "user pairs with Jaccard >= 0.3", "{:d}"),
    ("ratings_per_user", "mean ratings per user", "{:.1f}"),
    ("share_ge_4", "share of ratings >= 4", "{:.3f}"),
)
INFO_ROWS = (
    ("popularity_test_p10", "popularity P@10 (test)", "{:.4f}"),
    ("als_val_p10", "implicit ALS best P@10 (validation)", "{:.4f}"),
    ("ratio_test", "best trial's test P@10 / popularity test P@10", "{:.2f}"),
    ("rating_mean", "mean rating", "{:.3f}"),
    ("users_20", "users with >= 20 ratings", "{:d}"),
)


def table(results: dict[str, dict]) -> str:
    names = list(results)
    real = results["real"]
    lines = ["| measure | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for key, label, fmt in ROWS + INFO_ROWS:
        cells = []
        for name in names:
            value = results[name][key]
            cell = fmt.format(value)
            if name != "real" and (key, label, fmt) in ROWS:
                off = value / real[key] - 1.0
                cell += f" ({off:+.0%}{'' if abs(off) <= TOLERANCE else ' OUT'})"
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def calibrate(workdir: str, seeds: list[int], evals: int, selection: str) -> dict:
    from recsys.data import SyntheticConfig

    results = {"real": cached(workdir, "real", lambda: {
        **set_statistics(ratings_frame(None)),
        **pipeline_statistics(None, os.path.join(workdir, "split-real"), evals)})}
    for seed in seeds:
        config = SyntheticConfig(**REAL, seed=seed, selection=selection)
        name = f"{selection}-seed{seed}"

        def compute(config=config, name=name):
            data, stats = synthetic_release(workdir, config)
            return {**set_statistics(ratings_frame(data)),
                    **pipeline_statistics(data, os.path.join(workdir, f"split-{name}"), evals),
                    "item_gini": stats["item_gini"], "generator_version": stats["generator_version"]}

        results[name] = cached(workdir, name, compute)
    return results


def one_million(workdir: str, selections: list[str], seed: int) -> dict:
    from recsys import jobs
    from recsys.data import scaled_config

    results = {}
    for selection in selections:
        config = scaled_config(1_000_000, seed=seed, selection=selection)

        def compute(config=config, selection=selection):
            data, stats = synthetic_release(workdir, config)
            split_dir = os.path.join(workdir, f"split-1m-{selection}")
            jobs.split(data=data, split_dir=split_dir)
            popularity = jobs.baseline(data=data, split_dir=split_dir)
            als = jobs.als(data=data, split_dir=split_dir, **ONE_MILLION_ALS)
            return {"config": config.as_params(), "ratings": stats["ratings"],
                    "item_gini": stats["item_gini"], "generate_seconds": stats["generate_seconds"],
                    "popularity_val_p10": popularity["val_precision_at_k"],
                    "als_val_p10": als["metrics"]["precision_at_k"],
                    "ratio_val": als["metrics"]["precision_at_k"] / popularity["val_precision_at_k"]}

        results[selection] = cached(workdir, f"1m-{selection}-seed{seed}", compute)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="42,7", help="synthetic seeds, comma-separated")
    parser.add_argument("--evals", type=int, default=8, help="implicit search trials")
    parser.add_argument("--selection", default="taste", help="the generator's selection for the calibration")
    parser.add_argument("--one-million", action="store_true", help="the 1M implicit ALS comparison instead")
    parser.add_argument("--selections", default="taste,popularity", help="for --one-million")
    parser.add_argument("--workdir", default="", help="scratch folder (default: a new temporary one)")
    args = parser.parse_args(argv)

    workdir = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="recsys-calibrate-"))
    os.makedirs(workdir, exist_ok=True)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{os.path.join(workdir, 'mlflow.db')}"
    os.environ.setdefault("MLFLOW_EXPERIMENT_NAME", "synthetic-calibration")
    os.chdir(workdir)  # MLflow's ./mlruns artifacts and Spark's scratch land here, not in the checkout
    print(f"[calibrate] workdir {workdir}, {datetime.date.today()}", flush=True)
    if args.one_million:
        results = one_million(workdir, args.selections.split(","), seed=42)
    else:
        seeds = [int(s) for s in args.seeds.split(",") if s]
        results = calibrate(workdir, seeds, args.evals, args.selection)
        print(table(results))
    print(json.dumps(results, indent=2, sort_keys=True, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
