"""The evaluation protocol, implemented once and used for every model.

- **Rating metrics** (:func:`rating_metrics`): RMSE and MAE over every held-out rating (the
  definitions of Spark's ``RegressionEvaluator``), in one aggregation. Rows the model cannot
  score (cold start: null or NaN prediction) are scored by a
  :class:`~recsys.models.bias.BiasBaseline`;
  ``coverage`` is the share of held-out rows the model scored itself (same aggregation). Only
  for models whose ``predicts_ratings`` is true.
- **Ranking metrics** (:func:`ranking_metrics`): for each held-out user, the top ``k`` movies
  they did not rate in training (:func:`recommend`); relevant = held-out movies rated at least
  ``relevance_threshold``. Precision@K, Recall@K, NDCG@K and MAP@K follow Spark's
  ``RankingEvaluator`` / ``RankingMetrics`` definitions exactly (a test checks them against it)
  but are computed in one aggregation instead of one Spark job per metric. Per user with
  predicted list ``p`` (at most ``k`` long) and relevant set ``R``:

  - precision = ``|p ∩ R| / k`` (divided by ``k`` even when fewer than ``k`` were recommended);
  - recall = ``|p ∩ R| / |R|`` (not capped at ``k``: a user with 20 relevant movies can reach
    at most 0.5 at K=10);
  - NDCG = binary-gain DCG of ``p`` over the ideal DCG of ``min(|R|, k)`` hits, gain
    ``1 / log(rank + 1)``;
  - MAP = sum of precision at each hit's rank over ``min(|R|, k)``.

  Spark counts a user with an empty ``R`` as 0; here such users are left out of every average
  and counted in ``n_users_no_relevant`` instead.

Metric keys are the constants of :mod:`recsys.core.constants` (``RMSE``, ``PRECISION``, ...),
unprefixed; jobs log them as ``val_<key>`` / ``test_<key>``. Nothing that grows with the data
is collected to the driver.
"""

from __future__ import annotations

import math
from functools import reduce

from recsys.core.constants import (
    COVERAGE,
    DEFAULT_K,
    DEFAULT_RELEVANCE_THRESHOLD,
    ITEM_COL,
    MAE,
    MAP,
    N_USERS,
    N_USERS_NO_RELEVANT,
    NDCG,
    PRECISION,
    PREDICTION_COL,
    RANK_COL,
    RATING_COL,
    RECALL,
    RMSE,
    SCORE_COL,
    USER_COL,
)
from recsys.core.errors import RecsysError
from recsys.core.params import RELEVANCE_THRESHOLD, K
from recsys.core.progress import Progress, quiet
from recsys.models.bias import BiasBaseline

#: :func:`recommend`: the smallest candidate slack, and the largest before ``score_all``.
DEFAULT_MIN_SLACK = 16
DEFAULT_MAX_SLACK = 4096


def check_eval_params(k, relevance_threshold) -> tuple[int, float]:
    """Validate ``k`` and ``relevance_threshold``; returns them typed. RecsysError otherwise."""
    return K.check(k), RELEVANCE_THRESHOLD.check(relevance_threshold)


# ---------------------------------------------------------------- top-K with seen removed


def model_factors(model):
    """``(user_factors, item_factors)`` DataFrames ``[id, features]`` of a model whose score is
    their dot product (``model.factors()``, e.g. ALS), or None for other models."""
    get = getattr(model, "factors", None)
    return get() if callable(get) else None


def recommend(model, users, train, k: int = DEFAULT_K, *, min_slack: int = DEFAULT_MIN_SLACK,
              max_slack: int = DEFAULT_MAX_SLACK, progress: Progress = quiet, blocks: dict | None = None):
    """Top ``k`` movies per user among those the user did not rate in ``train``.

    ``users``: DataFrame with ``userId`` (duplicates ignored). Returns a lazy
    ``DataFrame[userId, movieId, score, rank]`` (rank 1..k; fewer rows when the model cannot
    score ``k`` unseen movies). Ties: score descending, then movieId ascending.

    How: a user who rated ``s`` movies loses at most ``s`` of the model's top ``k + s``, so
    asking ``model.top_n`` for ``k + slack`` with ``slack >= s`` and removing seen movies is
    exact. Users are grouped by ``slack`` = ``s`` rounded up to a power of two (at least
    ``min_slack``), one ``top_n`` call per group (about log2(max s) calls). Users whose slack
    would exceed ``max_slack`` (the few heaviest raters) are scored with
    ``model.score_all`` instead, and their seen movies removed from that.

    Cost: candidate rows are at most ``sum over users of (k + 2 * max(s, min_slack))``, i.e.
    ``O(k * users + ratings of those users)``, plus ``heavy users x movies`` rows for the
    ``score_all`` group; then one anti-join with the users' training ratings and one window
    sort per user. No users x all-movies cross join is materialised for ordinary users (how
    the model finds its top n, e.g. ALS's blocked cross product, is the model's business).
    Only the distinct slack values (a few dozen numbers) reach the driver.

    Factor models (:func:`model_factors` finds their factor tables, e.g. ALS) skip all of the
    above: :func:`recsys.evaluation.topk.top_k_unseen` scores the users against every movie in blocks and
    drops seen movies inside each block, in one Spark pass with no slack (same result, same
    order; ``min_slack``/``max_slack`` do not apply; ``blocks`` is its cache of grouped seen
    pairs, see :class:`HeldOut`).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    k, _ = check_eval_params(k, DEFAULT_RELEVANCE_THRESHOLD)
    factors = model_factors(model)
    if factors is not None:
        from recsys.evaluation.topk import top_k_unseen

        return top_k_unseen(factors[0], factors[1], train.select(USER_COL, ITEM_COL), k,
                            users=users, progress=progress, blocks=blocks)
    users = users.select(USER_COL).distinct()
    seen = train.select(USER_COL, ITEM_COL).join(users, USER_COL, "left_semi")
    counts = users.join(seen.groupBy(USER_COL).agg(F.count(F.lit(1)).alias("_seen")), USER_COL, "left")
    s = F.coalesce(F.col("_seen"), F.lit(0))
    pow2 = F.pow(F.lit(2.0), F.ceil(F.log2(s))).cast("long")  # null for s = 0
    pow2 = F.when(pow2 < s, pow2 * 2).otherwise(pow2)  # guard against log2 rounding down
    slack = F.greatest(F.lit(int(min_slack)), pow2)
    counts = counts.withColumn("_slack", slack).select(USER_COL, "_slack").cache()
    tiers = sorted(int(r[0]) for r in counts.select("_slack").distinct().collect())

    parts = []
    light = [t for t in tiers if t <= max_slack]
    for t in light:
        parts.append(model.top_n(counts.filter(F.col("_slack") == t).select(USER_COL), k + t)
                     .select(USER_COL, ITEM_COL, SCORE_COL))
    if len(light) < len(tiers):
        heavy = counts.filter(F.col("_slack") > max_slack).select(USER_COL)
        parts.append(model.score_all(heavy).select(USER_COL, ITEM_COL, SCORE_COL))
    progress(f"[recommend] top-{k}: {len(light)} top_n group(s) (slack {light[:1]}..{light[-1:]}), "
             f"score_all for users with > {max_slack} ratings: {'yes' if len(light) < len(tiers) else 'no'}")
    if not parts:
        spark = users.sparkSession
        schema = T.StructType([T.StructField(USER_COL, T.IntegerType()),
                               T.StructField(ITEM_COL, T.IntegerType()),
                               T.StructField(SCORE_COL, T.DoubleType()),
                               T.StructField(RANK_COL, T.IntegerType())])
        return spark.createDataFrame([], schema)

    candidates = reduce(lambda a, b: a.unionByName(b), parts)
    unseen = candidates.join(seen, [USER_COL, ITEM_COL], "left_anti")
    order = Window.partitionBy(USER_COL).orderBy(F.col(SCORE_COL).desc(), F.col(ITEM_COL).asc())
    return (unseen.withColumn(RANK_COL, F.row_number().over(order))
            .filter(F.col(RANK_COL) <= k)
            .select(USER_COL, ITEM_COL, F.col(SCORE_COL).cast("double").alias(SCORE_COL), RANK_COL))


# ---------------------------------------------------------------- metrics


def rating_metrics(pred_df, *, label_col: str = RATING_COL,
                   prediction_col: str = PREDICTION_COL, covered_col: str | None = None) -> dict[str, float]:
    """``{rmse, mae}`` of ``prediction_col`` against ``label_col``, plus ``coverage`` = the mean
    of boolean ``covered_col`` when given; one Spark aggregation. A null prediction is an error
    (RecsysError); a NaN one makes the metrics NaN."""
    from pyspark.sql import functions as F

    err = F.col(prediction_col).cast("double") - F.col(label_col).cast("double")
    aggs = [F.sqrt(F.avg(err * err)).alias(RMSE), F.avg(F.abs(err)).alias(MAE),
            F.count(F.when(F.col(prediction_col).isNull(), 1)).alias("_nulls")]
    if covered_col is not None:
        aggs.append(F.avg(F.col(covered_col).cast("double")).alias(COVERAGE))
    row = pred_df.agg(*aggs).first()
    if row["_nulls"]:
        raise RecsysError(f"rating metrics: {row['_nulls']} row(s) have a null {prediction_col}")
    keys = (RMSE, MAE) + ((COVERAGE,) if covered_col is not None else ())
    return {key: float("nan") if row[key] is None else float(row[key]) for key in keys}


def ranking_metrics(recs, heldout, k: int = DEFAULT_K,
                    threshold: float = DEFAULT_RELEVANCE_THRESHOLD) -> dict[str, float]:
    """Precision/Recall/NDCG/MAP@k of ``recs`` (``userId, movieId, rank``) against ``heldout``.

    Relevant = held-out movies rated >= ``threshold``. Averages are over held-out users with at
    least one relevant movie (``n_users_evaluated``; a user with no recommendation scores 0);
    held-out users without one are counted in ``n_users_no_relevant``. Metrics are NaN when no
    user is evaluated. Definitions: the module docstring (Spark's ``RankingMetrics``); computed
    per user with array functions, then averaged, in one Spark aggregation.
    """
    k, threshold = check_eval_params(k, threshold)
    return _ranking_metrics(recs, relevant_sets(heldout, threshold), k)


def relevant_sets(heldout, threshold: float):
    """``DataFrame[userId, _rel array<long>]``: each held-out user's relevant movies (rated at
    least ``threshold``; an empty array when none is)."""
    from pyspark.sql import functions as F

    item = F.col(ITEM_COL).cast("long")
    return (heldout.groupBy(USER_COL)
            .agg(F.collect_set(F.when(F.col(RATING_COL) >= threshold, item)).alias("_rel")))


def _ranking_metrics(recs, truth, k: int) -> dict[str, float]:
    """:func:`ranking_metrics` given the held-out users' :func:`relevant_sets`."""
    from pyspark.sql import functions as F

    item = F.col(ITEM_COL).cast("long")
    ranked = (recs.filter(F.col(RANK_COL) <= k)
              .groupBy(USER_COL)
              .agg(F.sort_array(F.collect_list(F.struct(F.col(RANK_COL), item.alias("_m")))).alias("_r"))
              .select(USER_COL, F.slice(F.transform("_r", lambda r: r["_m"]), 1, k).alias("_p")))
    rel = F.col("_rel")
    p = F.coalesce(F.col("_p"), F.array().cast("array<long>"))
    n_rel = F.size(rel)
    ideal_hits = F.least(n_rel, F.lit(k))
    gains = F.array(*[F.lit(1.0 / math.log(i + 2)) for i in range(k)])  # gain of 0-based position i
    hit = F.transform(p, lambda x: F.array_contains(rel, x))
    n_hits = F.size(F.filter(hit, lambda h: h))
    dcg = F.aggregate(F.transform(hit, lambda h, i: F.when(h, F.element_at(gains, i + 1)).otherwise(0.0)),
                      F.lit(0.0), lambda acc, g: acc + g)
    ideal = F.aggregate(F.slice(gains, 1, ideal_hits), F.lit(0.0), lambda acc, g: acc + g)
    # MAP: running (hits so far, sum of precision at each hit); position i is rank i + 1
    ap_state = F.aggregate(
        F.transform(hit, lambda h, i: F.struct(h.alias("h"), (i + 1).alias("r"))),
        F.struct(F.lit(0).alias("n"), F.lit(0.0).alias("s")),
        lambda acc, e: F.when(e["h"], F.struct((acc["n"] + 1).alias("n"),
                                                (acc["s"] + (acc["n"] + 1) / e["r"]).alias("s")))
        .otherwise(acc))
    per_user = {
        PRECISION: n_hits / F.lit(float(k)),
        RECALL: n_hits / n_rel,
        NDCG: dcg / ideal,
        MAP: ap_state["s"] / ideal_hits,
    }
    evaluated = n_rel > 0
    row = (truth.join(ranked, USER_COL, "left")
           .agg(F.count(F.lit(1)).alias("_users"), F.count(F.when(evaluated, 1)).alias("_eval"),
                *[F.avg(F.when(evaluated, value)).alias(key) for key, value in per_user.items()])
           .first())
    n_eval = int(row["_eval"])
    out = {N_USERS: float(n_eval), N_USERS_NO_RELEVANT: float(row["_users"] - n_eval)}
    for key in per_user:
        out[key] = float("nan") if n_eval == 0 or row[key] is None else float(row[key])
    return out


def evaluate(model, train, heldout, *, k: int = DEFAULT_K,
             relevance_threshold: float = DEFAULT_RELEVANCE_THRESHOLD,
             fallback: BiasBaseline | None = None, progress: Progress = quiet) -> dict[str, float]:
    """Judge a fitted ``model`` (a :class:`recsys.models.base.Recommender`) on ``heldout``.

    Returns unprefixed keys: ``rmse``, ``mae``, ``coverage`` (only when
    ``model.predicts_ratings``; rows the model leaves null/NaN are scored by ``fallback``, a
    :class:`BiasBaseline` fitted on ``train`` when None), then ``precision_at_k``,
    ``recall_at_k``, ``ndcg_at_k``, ``map_at_k``, ``n_users_evaluated``, ``n_users_no_relevant``.
    Recommendations are computed only for held-out users with a relevant movie. To judge many
    models on the same data, keep one :class:`HeldOut` instead.
    """
    held = HeldOut(train, heldout, k=k, relevance_threshold=relevance_threshold, fallback=fallback)
    try:
        return held.evaluate(model, progress=progress)
    finally:
        held.release()


class HeldOut:
    """One held-out set on which many models are judged (a search's trials), by :func:`evaluate`'s
    protocol, with the parts that do not depend on the model computed once and cached:

    - the held-out rows with the fallback's prediction beside them (the rating metrics then only
      join the model's factors to them);
    - the users to recommend for (held-out users with a relevant movie) and each held-out
      user's relevant set;
    - for factor models, the users' training pairs grouped by user block
      (:func:`recsys.evaluation.topk.seen_blocks`), the one shuffle of every training rating in a trial.

    Metrics are exactly :func:`evaluate`'s (it is this class used once). Caches are filled on
    first use; :meth:`prepare` fills them at once, for callers that release what each trial
    caches (``recsys.mlops.trials``). :meth:`release` frees them; the fallback is
    released only when this object fitted it.
    """

    def __init__(self, train, heldout, *, k: int = DEFAULT_K,
                 relevance_threshold: float = DEFAULT_RELEVANCE_THRESHOLD,
                 fallback: BiasBaseline | None = None):
        self.k, self.threshold = check_eval_params(k, relevance_threshold)
        self.train, self.heldout = train, heldout
        self._fallback, self._own_fallback = fallback, False
        self._cached: list = []
        self._users = self._truth = self._rated = None
        self._blocks: dict = {}

    def _keep(self, df):
        df = df.cache()
        self._cached.append(df)
        return df

    @property
    def fallback(self) -> BiasBaseline:
        if self._fallback is None:
            self._fallback, self._own_fallback = BiasBaseline().fit(self.train), True
        return self._fallback

    @property
    def users(self):
        """Held-out users with at least one relevant movie: those recommended for."""
        from pyspark.sql import functions as F

        if self._users is None:
            self._users = self._keep(self.heldout.filter(F.col(RATING_COL) >= self.threshold)
                                     .select(USER_COL).distinct())
        return self._users

    @property
    def truth(self):
        if self._truth is None:
            self._truth = self._keep(relevant_sets(self.heldout, self.threshold))
        return self._truth

    @property
    def rated(self):
        """The held-out ``userId, movieId, rating`` rows plus ``_fallback``, the fallback's prediction."""
        if self._rated is None:
            pairs = self.heldout.select(USER_COL, ITEM_COL, RATING_COL)
            rated = self.fallback.predict(pairs).withColumnRenamed(PREDICTION_COL, "_fallback")
            self._rated = self._keep(rated)
        return self._rated

    def prepare(self, *, ratings: bool = True, factors: bool = True) -> HeldOut:
        """Compute the caches now: the rating rows (``ratings``), users and relevant sets, and
        the grouped seen pairs for factor models whose users are the training users
        (``factors``: ALS gives every training user factors, so every trial's user block count
        is the one computed here; another count is grouped afresh, uncached)."""
        from recsys.evaluation.topk import seen_blocks, user_blocks

        if ratings:
            self.rated.count()
        self.truth.count()
        if factors:
            in_train = self.users.join(self.train.select(USER_COL).distinct(), USER_COL, "left_semi")
            n_ub = user_blocks(in_train.count())
            if n_ub not in self._blocks:
                seen = self.train.select(USER_COL, ITEM_COL)
                self._blocks[n_ub] = self._keep(seen_blocks(seen, self.users, n_ub))
                self._blocks[n_ub].count()
        return self

    def evaluate(self, model, progress: Progress = quiet) -> dict[str, float]:
        """:func:`evaluate`'s metrics of a fitted ``model`` on this held-out set."""
        from pyspark.sql import functions as F

        k = self.k
        metrics: dict[str, float] = {}
        if getattr(model, "predicts_ratings", False):
            own = model.predict(self.rated)
            covered = F.col(PREDICTION_COL).isNotNull() & ~F.isnan(F.col(PREDICTION_COL))
            scored = (own.withColumn("_covered", covered)
                      .withColumn(PREDICTION_COL, F.when(F.col("_covered"), F.col(PREDICTION_COL))
                                  .otherwise(F.col("_fallback")).cast("double")))
            metrics.update(rating_metrics(scored, covered_col="_covered"))
            progress(f"[evaluate] rmse {metrics[RMSE]:.4f}, coverage {metrics[COVERAGE]:.4f}")
        recs = recommend(model, self.users, self.train, k, progress=progress, blocks=self._blocks)
        metrics.update(_ranking_metrics(recs, self.truth, k))
        progress(f"[evaluate] precision@{k} {metrics[PRECISION]:.4f} over {int(metrics[N_USERS])} users")
        return metrics

    def release(self) -> None:
        """Unpersist the caches (and the fallback if this object fitted it)."""
        for df in self._cached:
            df.unpersist()
        self._cached, self._blocks = [], {}
        self._users = self._truth = self._rated = None
        if self._own_fallback:
            self._fallback.release()
            self._fallback, self._own_fallback = None, False
