"""A tiny MovieLens-shaped release with structure ALS can learn, for end-to-end ALS tests."""

from __future__ import annotations

import random
from pathlib import Path


def write_tiny_movielens(root, n_users: int = 60, n_movies: int = 40, per_user: int = 16,
                         seed: int = 1, own_share: float | None = None) -> str:
    """Two taste groups: users with even ids rate movies 1..n/2 high and the rest low, odd users
    the reverse (with noise). Writes ``ratings.csv`` and ``movies.csv``; returns the folder.

    Which movies a user rates is uniform by default, so only the ratings carry the groups: an
    implicit model (it sees who rated what) cannot beat popularity there. ``own_share``: the share
    of a user's ratings drawn from the half the user likes, as people mostly watch what they like;
    then the groups are in the implicit signal too."""
    rng = random.Random(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    lines = ["userId,movieId,rating,timestamp"]
    half = n_movies // 2
    for user in range(1, n_users + 1):
        if own_share is None:
            chosen = rng.sample(range(1, n_movies + 1), per_user)
        else:
            liked_half = range(1, half + 1) if user % 2 == 0 else range(half + 1, n_movies + 1)
            other_half = range(half + 1, n_movies + 1) if user % 2 == 0 else range(1, half + 1)
            n_own = round(per_user * own_share)
            chosen = rng.sample(liked_half, n_own) + rng.sample(other_half, per_user - n_own)
        for movie in sorted(chosen):
            liked = (movie <= half) == (user % 2 == 0)
            base = 4.5 if liked else 1.5
            rating = min(5.0, max(0.5, base + rng.choice([-0.5, 0.0, 0.0, 0.5])))
            lines.append(f"{user},{movie},{rating},{1_000_000 + user * 100 + movie}")
    (root / "ratings.csv").write_text("\n".join(lines) + "\n")
    movies = ["movieId,title,genres"] + [f"{m},Movie {m} (2000),Drama" for m in range(1, n_movies + 1)]
    (root / "movies.csv").write_text("\n".join(movies) + "\n")
    return str(root)
