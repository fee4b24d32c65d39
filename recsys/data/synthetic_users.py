"""One synthetic user at a time, in numpy: the movie-side arrays every Python worker rebuilds from
the seed (:func:`movie_context`), a user's movies, tastes and rating style (:func:`user_core`), and
the user's rows (:func:`user_rows`); :func:`partition_generator` is the ``mapInPandas`` function
:mod:`recsys.data.synthetic` runs over the users. The shape constants below are the model's
(see that module's docstring for what they mean and where they come from)."""

from __future__ import annotations

import math

from recsys.core.constants import ITEM_COL, RATING_COL, TIMESTAMP_COL, USER_COL

#: Log-normal shape of ratings per user, fitted to ml-latest (scale 34.5 there; ours is solved).
USER_SIGMA = 1.54
#: Popularity weight of the movie at rank r (0 = most popular): (r + r0)^-a, r0 = offset * n.
POPULARITY_EXPONENT = 2.0
POPULARITY_OFFSET = 0.004
#: Rating model: global mean, bias spreads, spread of the factor term, half-star users' share.
RATING_MEAN = 3.4
USER_BIAS_SD = 0.6
MOVIE_BIAS_SD = 0.3
FACTOR_SD = 0.6
HALF_STAR_USERS = 0.55
#: Taste selection: softmax temperature on user.movie affinities (in rating points), and the
#: global mean that replaces RATING_MEAN (users pick movies they like, which lifts the ratings).
#: Calibrated on ml-latest-small (experiments/results/synthetic_calibration.md).
TASTE_BETA = 3.0
TASTE_RATING_MEAN = 3.1
#: ... a user's own beta is TASTE_BETA x log-normal(TASTE_BETA_SD): mainstream users (small beta)
#: share blockbusters, enthusiasts follow their taste, so few pairs are close and some very close
#: (ml-latest-small: 100th-best Jaccard 0.46 but only 1,192 pairs >= 0.3).
TASTE_BETA_SD = 1.1
#: ... and its popularity curve, (r + r0)^-a as above, a little steeper than POPULARITY_EXPONENT
#: (taste spreads the draws over the catalogue).
TASTE_POPULARITY_EXPONENT = 2.25
TASTE_POPULARITY_OFFSET = 0.004
#: ... and per-(user, movie) noise: log weight + N(0, TASTE_NOISE_SD^2), a log-normal factor drawn
#: afresh for every user and movie. It spreads a user's choices over the catalogue as taste does
#: (so the Jaccard spread survives a lower beta) but is shared by no one, so ALS cannot learn it.
TASTE_NOISE_SD = 0.75
#: Twins: share of the movie set swapped; the smallest source user that keeps Jaccard >= 0.8.
TWIN_SWAP_SHARE = 0.05
MIN_TWIN_SOURCE_RATINGS = 10
MAX_TWINS = 10_000
#: Timestamps: 1995-01-09 .. 2023-07-20, like ml-latest.
FIRST_TIMESTAMP = 789_652_009
LAST_TIMESTAMP = 1_689_811_200

_CONTEXTS: dict = {}


def movie_context(seed: int, n_movies: int, rank: int, selection: str = "popularity") -> dict:
    """Movie-side arrays, rebuilt identically from the seed in every Python worker."""
    import numpy as np

    key = (seed, n_movies, rank, selection)
    if key not in _CONTEXTS:
        rng = np.random.default_rng([seed, 0, 0])
        ranks = np.arange(n_movies, dtype=np.float64)
        weights = (ranks + 1.0 + POPULARITY_OFFSET * n_movies) ** -POPULARITY_EXPONENT
        cdf = np.cumsum(weights)
        cdf /= cdf[-1]
        movie_of_rank = rng.permutation(n_movies).astype(np.int64) + 1  # rank -> movieId
        rank_of_movie = np.empty(n_movies, dtype=np.int64)
        rank_of_movie[movie_of_rank - 1] = np.arange(n_movies)
        factor_sd = (FACTOR_SD**2 / rank) ** 0.25
        factors = rng.standard_normal((n_movies, rank)) * factor_sd  # by movieId - 1
        # Popular movies are rated a little higher, as in the real data.
        lift = 0.15 * (1.0 - 2.0 * rank_of_movie / max(n_movies - 1, 1))
        bias = rng.standard_normal(n_movies) * MOVIE_BIAS_SD + lift
        ctx = {"n": n_movies, "weights": weights, "cdf": cdf, "movie_of_rank": movie_of_rank,
               "factors": factors, "bias": bias, "factor_sd": factor_sd, "rank": rank,
               "selection": selection}
        if selection == "taste":
            # by popularity rank, like weights; E_u[exp(b f_u.F)] = exp(b^2 s^2 |F|^2 / 2) for
            # f_u ~ N(0, s^2 I): dividing by it keeps each movie's expected weight its popularity
            ctx["rank_factors"] = np.ascontiguousarray(factors[movie_of_rank - 1])
            norms = np.einsum("ij,ij->i", ctx["rank_factors"], ctx["rank_factors"])
            ctx["log_popularity"] = -TASTE_POPULARITY_EXPONENT * np.log(
                ranks + 1.0 + TASTE_POPULARITY_OFFSET * n_movies)
            ctx["half_norms"] = 0.5 * factor_sd**2 * norms
        _CONTEXTS.clear()
        _CONTEXTS[key] = ctx
    return _CONTEXTS[key]


def _taste_weights(ctx, factors, beta: float, rng):
    """(weights, cdf, log weights) by popularity rank of one user's taste selection."""
    import numpy as np

    log_weights = ctx["log_popularity"] + beta * (ctx["rank_factors"] @ factors) - beta**2 * ctx["half_norms"]
    if TASTE_NOISE_SD > 0:  # E[exp(sd Z)] is the same for every movie: popularity is kept on average
        log_weights += TASTE_NOISE_SD * rng.standard_normal(len(log_weights))
    log_weights -= log_weights.max()
    weights = np.exp(log_weights)  # may underflow to 0 far in the tail: never drawn by the cdf
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    return weights, cdf, log_weights


def _draw(rng, weights, cdf, k: int, exclude=None, log_weights=None):
    """``k`` distinct movie ranks drawn by ``weights`` (over popularity ranks; ``cdf`` their
    normalised cumulative sum) without replacement, in draw order.

    Few draws relative to the catalogue: draw with replacement and keep first occurrences
    (the same distribution). Many: Efraimidis-Spirakis keys over the whole catalogue, compared
    as logarithms when ``log_weights`` is given (taste weights underflow to 0 in the tail;
    log E - log w orders exactly as E / w).
    """
    import numpy as np

    n = len(weights)
    taken = np.empty(0, dtype=np.int64) if exclude is None else exclude
    free = n - len(taken)
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    if k * 8 <= free:
        have = np.empty(0, dtype=np.int64)
        for _ in range(30):
            need = k - len(have)
            draws = np.searchsorted(cdf, rng.random(2 * need + 16), side="right")
            draws = np.minimum(draws, n - 1)
            if len(taken):
                draws = draws[~np.isin(draws, taken)]
            merged = np.concatenate([have, draws])
            _, first = np.unique(merged, return_index=True)
            have = merged[np.sort(first)]
            if len(have) >= k:
                return have[:k]
    if log_weights is None:
        keys = rng.exponential(size=n) / weights
    else:
        keys = np.log(rng.exponential(size=n)) - log_weights
    if len(taken):
        keys[taken] = np.inf
    chosen = np.argpartition(keys, k - 1)[:k]
    return chosen[np.argsort(keys[chosen], kind="stable")]


def user_core(ctx, seed: int, user: int, count: int):
    """The part of a user a twin copies: movies (ranks, draw order), tastes, rating style, and
    the (weights, cdf, log weights) the movies were drawn by."""
    import numpy as np

    rng = np.random.default_rng([seed, 1, user])
    if ctx["selection"] == "popularity":  # version 1's order of draws: movies first
        drawn_by = ctx["weights"], ctx["cdf"], None
        ranks = _draw(rng, *drawn_by[:2], count)
    factors = rng.standard_normal(ctx["rank"]) * ctx["factor_sd"]
    bias = rng.standard_normal() * USER_BIAS_SD
    half_stars = rng.random() < HALF_STAR_USERS
    if ctx["selection"] == "taste":
        beta = TASTE_BETA * math.exp(TASTE_BETA_SD * rng.standard_normal())
        drawn_by = _taste_weights(ctx, factors, beta, rng)
        ranks = _draw(rng, *drawn_by[:2], count, log_weights=drawn_by[2])
    return rng, ranks, factors, bias, half_stars, drawn_by


def user_rows(ctx, seed: int, noise: float, user: int, source: int, count: int):
    """(movieIds, ratings, timestamps) of one user, sorted by movieId."""
    import numpy as np

    rng, ranks, factors, bias, half_stars, drawn_by = user_core(ctx, seed, source, count)
    if source != user:  # a planted twin: swap a few movies (drawn as the source's), nudge the tastes
        rng = np.random.default_rng([seed, 2, user])
        k = max(1, int(count * TWIN_SWAP_SHARE))
        drop = rng.choice(count, size=k, replace=False)
        ranks = ranks.copy()
        ranks[drop] = _draw(rng, *drawn_by[:2], k, exclude=ranks, log_weights=drawn_by[2])
        factors = factors + rng.standard_normal(len(factors)) * 0.1 * ctx["factor_sd"]
    movies = ctx["movie_of_rank"][ranks]
    mean = TASTE_RATING_MEAN if ctx["selection"] == "taste" else RATING_MEAN
    score = (mean + bias + ctx["bias"][movies - 1] + ctx["factors"][movies - 1] @ factors
             + rng.standard_normal(len(movies)) * noise)
    rating = np.round(score * 2.0) / 2.0 if half_stars else np.round(score)
    rating = np.clip(rating, 0.5, 5.0)
    span = min(float(np.exp(rng.normal(math.log(60.0), 1.5))), 3650.0) * 86400.0
    span = min(span, LAST_TIMESTAMP - FIRST_TIMESTAMP - count - 1.0)
    start = FIRST_TIMESTAMP + int(rng.random() * (LAST_TIMESTAMP - FIRST_TIMESTAMP - span - count))
    gaps = np.cumsum(rng.exponential(size=count))
    stamps = start + np.floor(gaps / gaps[-1] * span).astype(np.int64) + np.arange(count)
    order = np.argsort(movies, kind="stable")
    return movies[order], rating[order], stamps[order]


def partition_generator(seed: int, n_movies: int, rank: int, noise: float, selection: str):
    """The ``mapInPandas`` function: (userId, sourceId, n) batches -> ratings rows."""

    def generate(batches):
        import numpy as np
        import pandas as pd

        ctx = movie_context(seed, n_movies, rank, selection)
        for pdf in batches:
            users, movies, ratings, stamps = [], [], [], []
            for user, source, count in zip(pdf[USER_COL].to_numpy(), pdf["sourceId"].to_numpy(),
                                           pdf["n"].to_numpy(), strict=True):
                m, r, t = user_rows(ctx, seed, noise, int(user), int(source), int(count))
                users.append(np.full(len(m), user, dtype=np.int32))
                movies.append(m.astype(np.int32))
                ratings.append(r)
                stamps.append(t)
            if users:
                yield pd.DataFrame({USER_COL: np.concatenate(users), ITEM_COL: np.concatenate(movies),
                                    RATING_COL: np.concatenate(ratings),
                                    TIMESTAMP_COL: np.concatenate(stamps)})

    return generate
