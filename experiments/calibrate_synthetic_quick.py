"""Quick re-simulation for tuning the taste constants (issue 26): seconds per seed, no Spark.

Takes the per-user counts and planted twins of synthetic releases that
``calibrate_synthetic.py`` already wrote (``<workdir>/data/synth-taste-100836-seed<s>``; the
counts do not depend on the taste constants), regenerates every user's rows with
``recsys.data.synthetic_users.user_rows`` after overriding constants given as ``--set NAME=VALUE``,
and prints the set statistics of ``calibrate_synthetic.set_statistics`` (exactly what the full
script measures, for the same constants) plus a proxy of the ALS / popularity ratio: one fixed
implicit ALS (rank 20, reg_param 0.05 x ratings, alpha 1, 10 iterations, normal equations in
numpy) against popularity by count, validation P@10 on a random 80/10/10 split (relevant: rating
>= 4, seen movies removed). The proxy gives 1.62 on ml-latest-small (the 8-trial search: 1.65) and
tracked the full script within about 10% on the releases tried; confirm with the full script.

    .venv/bin/python experiments/calibrate_synthetic_quick.py --workdir /tmp/cal --seeds 42,7 \\
        --set TASTE_BETA=3.0 --set TASTE_NOISE_SD=0.75
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys


def _sibling(name: str):
    """Another script of experiments/, loaded by its path (the scripts are not a package)."""
    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location(name, os.path.join(here, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


full = _sibling("calibrate_synthetic")


def release_users(release: str):
    """(userId -> count, twin userId -> source userId) of a written release."""
    import pandas as pd

    counts = pd.read_csv(os.path.join(release, "ratings.csv"), usecols=["userId"])["userId"].value_counts()
    with open(os.path.join(release, "planted_twins.json")) as fh:
        twins = {t["user"]: t["twin_of"] for t in json.load(fh)}
    return counts.sort_index(), twins


def resimulate(seed: int, counts, twins, n_movies: int = full.REAL["n_movies"], rank: int = 10,
               noise: float = 0.5):
    """The release's (userId, movieId, rating) regenerated with the current constants."""
    import numpy as np
    import pandas as pd

    from recsys.data import synthetic_users

    synthetic_users._CONTEXTS.clear()  # the movie context depends on TASTE_POPULARITY_*
    ctx = synthetic_users.movie_context(seed, n_movies, rank, "taste")
    users, movies, ratings = [], [], []
    for user, count in counts.items():
        source = int(twins.get(user, user))
        m, r, _ = synthetic_users.user_rows(ctx, seed, noise, int(user), source, int(count))
        users.append(np.full(len(m), user))
        movies.append(m)
        ratings.append(r)
    return pd.DataFrame({"userId": np.concatenate(users), "movieId": np.concatenate(movies),
                         "rating": np.concatenate(ratings)})


def als_ratio_proxy(ratings, rank: int = 20, reg: float = 0.05, alpha: float = 1.0, iterations: int = 10,
                    k: int = full.K, seed: int = 42) -> dict:
    """Validation P@k of one implicit ALS and of popularity by count, and their ratio."""
    import numpy as np

    user = ratings["userId"].astype("category").cat.codes.to_numpy()
    item = ratings["movieId"].astype("category").cat.codes.to_numpy()
    value = ratings["rating"].to_numpy()
    n_users, n_items = user.max() + 1, item.max() + 1
    draw = np.random.default_rng(seed).random(len(value))
    train, val = draw < 0.8, (draw >= 0.8) & (draw < 0.9)
    tu, ti, extra = user[train], item[train], alpha * value[train]  # confidence - 1

    def solve(rows, cols, fixed, n):  # Hu, Koren & Volinsky's normal equations, ALS-WR's scaled reg
        a = np.broadcast_to(fixed.T @ fixed, (n, rank, rank)).copy()
        b = np.zeros((n, rank))
        f = fixed[cols]
        np.add.at(a, rows, extra[:, None, None] * f[:, :, None] * f[:, None, :])
        np.add.at(b, rows, (1.0 + extra)[:, None] * f)
        a += (reg * np.maximum(np.bincount(rows, minlength=n), 1))[:, None, None] * np.eye(rank)
        return np.linalg.solve(a, b[:, :, None])[:, :, 0]

    init = np.random.default_rng(0)
    x, y = init.standard_normal((n_users, rank)) * 0.01, init.standard_normal((n_items, rank)) * 0.01
    for _ in range(iterations):
        x = solve(tu, ti, y, n_users)
        y = solve(ti, tu, x, n_items)
    seen = np.zeros((n_users, n_items), bool)
    seen[tu, ti] = True
    relevant = np.zeros((n_users, n_items), bool)
    hit = val & (value >= 4.0)
    relevant[user[hit], item[hit]] = True
    judged = np.flatnonzero(relevant.any(axis=1))

    def precision(scores):
        scores = np.where(seen[judged], -np.inf, scores)
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        return float(relevant[judged[:, None], top].sum(axis=1).mean() / k)

    als = precision(x[judged] @ y.T)
    counts = np.bincount(ti, minlength=n_items).astype(float)
    popularity = precision(np.broadcast_to(counts, (len(judged), n_items)))
    return {"proxy_popularity_p10": popularity, "proxy_als_p10": als, "proxy_ratio": als / popularity}


def main(argv=None) -> int:
    from recsys.data import synthetic_users

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="a calibrate_synthetic.py workdir with the releases")
    parser.add_argument("--seeds", default="42,7", help="synthetic seeds, comma-separated")
    parser.add_argument("--set", action="append", default=[], help="NAME=VALUE: a synthetic_users constant")
    parser.add_argument("--real", action="store_true", help="also the proxy on ml-latest-small")
    args = parser.parse_args(argv)
    for assignment in args.set:
        name, value = assignment.split("=", 1)
        if not hasattr(synthetic_users, name):
            raise SystemExit(f"--set {assignment}: recsys.data.synthetic_users has no {name}")
        setattr(synthetic_users, name, type(getattr(synthetic_users, name))(value))
    if args.real:
        print("real", json.dumps(als_ratio_proxy(full.ratings_frame(None))), flush=True)
    for seed in (int(s) for s in args.seeds.split(",") if s):
        release = os.path.join(args.workdir, "data", f"synth-taste-{full.REAL['n_ratings']}-seed{seed}")
        ratings = resimulate(seed, *release_users(release))
        print(seed, json.dumps({**full.set_statistics(ratings), **als_ratio_proxy(ratings)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
