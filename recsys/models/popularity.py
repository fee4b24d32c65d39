"""Popularity recommenders: one global list of movies, the same for every user.

``kind="count"``: movies ranked by how many training ratings they have (score = count).
It does not predict ratings (``predicts_ratings`` False; ``predict`` gives null).

``kind="damped_mean"``: movies ranked by their Bayesian average rating
``(sum of ratings + damping * mu) / (count + damping)``, ``mu`` the global mean training
rating, so a movie rated 5.0 once sits near ``mu`` instead of at the top. This kind also
predicts that damped mean as the rating of any (user, movie) pair whose movie was seen in
training (null otherwise, so the evaluation's bias-baseline fallback and ``coverage`` apply).

Saved as ``config.json`` (config + global mean) and ``items/`` (Parquet: movieId, n, mean,
score); no pickle.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from recsys.core import fs
from recsys.core.constants import ITEM_COL, PREDICTION_COL, RANK_COL, RATING_COL, SCORE_COL, USER_COL
from recsys.core.errors import RecsysError
from recsys.core.params import param, validate
from recsys.models.base import Recommender, read_meta

KINDS = ("count", "damped_mean")
DEFAULT_KIND = "count"
#: Prior strength of the damped mean, in ratings: a movie's own mean weighs n / (n + 10).
DEFAULT_DAMPING = 10.0


@dataclass(frozen=True)
class PopularityConfig:
    """Parameters of a popularity model; exactly these are logged as params."""

    kind: str = param(DEFAULT_KIND, "count (most rated) or damped_mean (Bayesian average rating).",
                      choices=KINDS)
    """``count`` (most rated) or ``damped_mean`` (Bayesian average rating)."""
    damping: float = param(DEFAULT_DAMPING, "damped_mean: pseudo-ratings at the global mean added to every "
                                            "movie.", low=0.0)
    """``damped_mean`` only: number of pseudo-ratings at the global mean added to every movie
    (>= 0; 0 is the raw mean, which puts single 5.0 ratings first)."""

    def __post_init__(self):
        validate(self)

    def as_params(self) -> dict:
        return asdict(self)


class PopularityRecommender(Recommender):
    """The same ranked list for everyone; see the module docstring for the two kinds."""

    def __init__(self, config: PopularityConfig | None = None, **kwargs):
        self.config = config if config is not None else PopularityConfig(**kwargs)
        self.name = f"popularity-{self.config.kind}"
        self.predicts_ratings = self.config.kind == "damped_mean"
        self.global_mean: float | None = None
        self.items = None  # DataFrame[movieId, n, mean, score], one row per training movie

    def fit(self, train) -> PopularityRecommender:
        from pyspark.sql import functions as F

        mu = train.agg(F.avg(RATING_COL)).first()[0]
        if mu is None:
            raise RecsysError("popularity: the training ratings are empty")
        self.global_mean = float(mu)
        n = F.count(F.lit(1))
        if self.config.kind == "count":
            score = n.cast("double")
        else:
            beta = F.lit(self.config.damping)
            score = (F.sum(RATING_COL) + beta * F.lit(self.global_mean)) / (n + beta)
        self.items = (train.groupBy(ITEM_COL)
                      .agg(n.alias("n"), F.avg(RATING_COL).alias("mean"), score.alias(SCORE_COL))
                      .cache())
        return self

    def _check_fitted(self):
        if self.items is None:
            raise RecsysError(f"{self.name} is not fitted: call fit(train) or load(spark, path) first")

    def ranking(self, n: int | None = None):
        """The global list: ``movieId, n, mean, score, rank`` (rank 1 = best), ``n`` rows at most."""
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        self._check_fitted()
        order = [F.col(SCORE_COL).desc(), F.col(ITEM_COL).asc()]
        if n is not None:
            top = self.items.orderBy(*order).limit(int(n))
            # a single small partition: the window below needs no shuffle of note
            return top.withColumn(RANK_COL, F.row_number().over(Window.orderBy(*order)))
        return self.items.withColumn(RANK_COL, F.row_number().over(Window.orderBy(*order)))

    def top_n(self, users, n: int):
        from pyspark.sql import functions as F

        top = self.ranking(n).select(ITEM_COL, SCORE_COL)
        return users.select(USER_COL).crossJoin(F.broadcast(top))

    def score_all(self, users):
        from pyspark.sql import functions as F

        self._check_fitted()
        return users.select(USER_COL).crossJoin(F.broadcast(self.items.select(ITEM_COL, SCORE_COL)))

    def predict(self, pairs):
        from pyspark.sql import functions as F

        self._check_fitted()
        if not self.predicts_ratings:
            return pairs.withColumn(PREDICTION_COL, F.lit(None).cast("double"))
        scores = self.items.select(ITEM_COL, F.col(SCORE_COL).alias("_pop_score"))
        return (pairs.join(scores, ITEM_COL, "left")
                .withColumn(PREDICTION_COL, F.col("_pop_score").cast("double"))
                .drop("_pop_score"))

    def save(self, path: str) -> None:
        self._check_fitted()
        spark = self.items.sparkSession
        if fs.exists(spark, path):
            raise RecsysError(f"{self.name}: {path} already exists; give a new directory")
        self.items.write.parquet(fs.to_uri(fs.join(path, "items")))
        # written last: its presence marks a complete save
        fs.write_text(spark, fs.join(path, "config.json"), json.dumps(
            {"model": "popularity", "config": self.config.as_params(),
             "global_mean": self.global_mean, "format": 1}))

    @classmethod
    def load(cls, spark, path: str) -> PopularityRecommender:
        meta = read_meta(spark, path, "popularity", "a popularity model")
        model = cls(PopularityConfig(**meta["config"]))
        model.global_mean = float(meta["global_mean"])
        model.items = spark.read.parquet(fs.to_uri(fs.join(path, "items")))
        return model
