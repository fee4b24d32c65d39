"""The bias baseline: global mean plus damped user and movie offsets.

The RMSE baseline every rating model is judged against, the cold-start fallback of
``recsys.evaluation`` (rows a model cannot score) and the offsets explicit ALS is fitted on top
of (``recsys.models.als``).
"""

from __future__ import annotations

import json

from recsys.core import fs
from recsys.core.constants import ITEM_COL, MAX_RATING, MIN_RATING, PREDICTION_COL, RATING_COL, USER_COL
from recsys.core.errors import RecsysError
from recsys.core.params import check_float

#: Damping of the bias baseline: a user's (movie's) offset is the sum of its residuals divided
#: by ``n + damping``, so an offset from ``n`` ratings is shrunk by ``n / (n + damping)`` toward 0.
#: With 5, one rating moves an offset a sixth of the way; 50 ratings, 91 %.
DEFAULT_BIAS_DAMPING = 5.0


class BiasBaseline:
    """Global mean plus damped movie and user offsets: the RMSE baseline and cold-start fallback.

    ``prediction = mu + b_user + b_movie``, clipped to the rating scale, where (``d`` = damping)

    - ``mu`` = mean training rating;
    - ``b_movie = sum(r - mu) / (n_movie + d)`` over the movie's training ratings;
    - ``b_user = sum(r - mu - b_movie) / (n_user + d)`` over the user's training ratings.

    An unknown user or movie has offset 0, so :meth:`predict` never returns null. The offset
    tables have one row per user / movie (cached; they are what :meth:`save` writes).
    """

    name = "bias"

    def __init__(self, damping: float = DEFAULT_BIAS_DAMPING):
        self.damping = check_float("bias damping", damping, low=0.0)
        self.global_mean: float | None = None
        self.user_bias = None  # DataFrame[userId, user_bias]
        self.item_bias = None  # DataFrame[movieId, item_bias]
        self._residuals: tuple | None = None  # (ratings, their cached residuals)

    def fit(self, train) -> BiasBaseline:
        from pyspark.sql import functions as F

        mu = train.agg(F.avg(RATING_COL)).first()[0]
        if mu is None:
            raise RecsysError("bias baseline: the training ratings are empty")
        mu = float(mu)
        d = F.lit(self.damping)
        item = (train.groupBy(ITEM_COL)
                .agg((F.sum(F.col(RATING_COL) - mu) / (F.count(F.lit(1)) + d)).alias("item_bias")))
        user = (train.join(item, ITEM_COL)
                .groupBy(USER_COL)
                .agg((F.sum(F.col(RATING_COL) - mu - F.col("item_bias")) / (F.count(F.lit(1)) + d))
                     .alias("user_bias")))
        self.global_mean, self.item_bias, self.user_bias = mu, item.cache(), user.cache()
        return self

    def _check_fitted(self):
        if self.global_mean is None:
            raise RecsysError("bias baseline is not fitted: call fit(train) or load(spark, path) first")

    def predict(self, pairs):
        """``pairs`` with ``userId, movieId`` (other columns kept) -> plus ``prediction`` (double)."""
        from pyspark.sql import functions as F

        self._check_fitted()
        out = pairs.join(self.item_bias, ITEM_COL, "left").join(self.user_bias, USER_COL, "left")
        raw = (F.lit(self.global_mean) + F.coalesce(F.col("user_bias"), F.lit(0.0))
               + F.coalesce(F.col("item_bias"), F.lit(0.0)))
        pred = F.least(F.greatest(raw, F.lit(MIN_RATING)), F.lit(MAX_RATING)).cast("double")
        return out.withColumn(PREDICTION_COL, pred).drop("user_bias", "item_bias")

    def residuals(self, ratings):
        """``ratings`` with ``rating`` replaced by ``rating - (mu + b_user + b_movie)``, unclipped
        (offset 0 when unknown): what a model fitted on top of this baseline must explain."""
        from pyspark.sql import functions as F

        self._check_fitted()
        base = (F.lit(self.global_mean) + F.coalesce(F.col("user_bias"), F.lit(0.0))
                + F.coalesce(F.col("item_bias"), F.lit(0.0)))
        return (ratings.join(self.item_bias, ITEM_COL, "left").join(self.user_bias, USER_COL, "left")
                .withColumn(RATING_COL, (F.col(RATING_COL) - base).cast("float"))
                .select(*ratings.columns))

    def cached_residuals(self, ratings):
        """:meth:`residuals` of ``ratings``, cached and materialised once and reused while
        ``ratings`` is the same DataFrame object: a search fits every explicit trial on the
        same residuals, so they are computed once, not per trial. :meth:`release` frees them."""
        if self._residuals is None or self._residuals[0] is not ratings:
            if self._residuals is not None:
                self._residuals[1].unpersist()
            cached = self.residuals(ratings).cache()
            cached.count()
            self._residuals = (ratings, cached)
        return self._residuals[1]

    def release(self) -> None:
        """Unpersist the cached offset tables and residuals (recomputed if used again)."""
        for table in (self.user_bias, self.item_bias):
            if table is not None:
                table.unpersist()
        if self._residuals is not None:
            self._residuals[1].unpersist()
            self._residuals = None

    def save(self, path: str) -> None:
        """Write ``path/users``, ``path/movies`` (Parquet) and ``path/bias.json`` (mean, damping)."""
        self._check_fitted()
        spark = self.item_bias.sparkSession
        if fs.exists(spark, path):
            raise RecsysError(f"bias baseline: {path} already exists; give a new directory")
        self.user_bias.write.parquet(fs.to_uri(fs.join(path, "users")))
        self.item_bias.write.parquet(fs.to_uri(fs.join(path, "movies")))
        # written last: its presence marks a complete save
        fs.write_text(spark, fs.join(path, "bias.json"), json.dumps(
            {"global_mean": self.global_mean, "damping": self.damping, "format": 1}))

    @classmethod
    def load(cls, spark, path: str) -> BiasBaseline:
        meta_path = fs.join(path, "bias.json")
        if not fs.exists(spark, meta_path):
            raise RecsysError(f"bias baseline: {path} has no bias.json (not a saved BiasBaseline)")
        meta = json.loads(fs.read_text(spark, meta_path))
        model = cls(damping=meta["damping"])
        model.global_mean = float(meta["global_mean"])
        model.user_bias = spark.read.parquet(fs.to_uri(fs.join(path, "users")))
        model.item_bias = spark.read.parquet(fs.to_uri(fs.join(path, "movies")))
        return model
