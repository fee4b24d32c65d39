"""Spark ALS behind the :class:`~recsys.models.base.Recommender` interface, and its serving form.

Two feedback modes (``ALSConfig.implicit_prefs``):

- **explicit** (default): ``predict`` gives a rating, clipped to the 0.5-5 scale, so RMSE
  applies (``predicts_ratings`` is True). With ``biases`` (the default) the model is the
  :class:`~recsys.models.bias.BiasBaseline` plus ALS fitted to its residuals:
  ``r_ui ~ mu + b_u + b_i + p_u . q_i``. Plain ALS has no bias terms, so its factors must spend
  capacity on "this movie is liked by everyone", and on the bundled data it loses to the bias
  baseline on RMSE (0.879 against 0.868); fitted on the residuals it reaches 0.852-0.855
  (measured, see the README). The biases are folded into the factors of one Spark ``ALSModel``
  of rank ``rank + 2``: user ``[p_u, 1, mu + b_u]`` and movie ``[q_i, b_i, 1]``, whose dot product
  is exactly the prediction above, so everything that reads the factors (``predict``, the
  evaluation's top-k, save/load, the logged model) needs nothing else.
- **implicit**: Hu, Koren & Volinsky's confidence model (``c = 1 + alpha * rating``); the scores
  are preferences, not ratings (``predicts_ratings`` False), and it is judged on ranking only.

:meth:`ALSRecommender.write_serving_model` writes the model that is logged to MLflow: a Spark
``PipelineModel`` made only of JVM stages, so ``mlflow.pyfunc.load_model`` and
``mlflow.spark.load_model`` need nothing but pyspark (no recsys code travels with the model):

- **implicit**: ``SQLTransformer`` numbering the input rows (``_recsys_row``); the fitted
  ``ALSModel`` (``coldStartStrategy="nan"``) -> ``_recsys_als``; ``SQLTransformer``:
  ``prediction`` = the score, 0.0 where ALS gives NaN (an unknown user or movie: no evidence of
  preference), rows back in input order (ALS's joins shuffle them; pyfunc pairs outputs with
  inputs by position).
- **explicit**: the same three stages, but the ``ALSModel`` also answers the evaluation's
  :class:`~recsys.models.bias.BiasBaseline` (see :func:`_with_fallback`): a sentinel user and
  movie (id 0: MovieLens ids are >= 1) such that (user, 0) scores ``mu + b_user``, (0, movie)
  ``mu + b_movie`` and (0, 0) ``mu``. With ``biases`` the folded factors already hold the offsets
  and the sentinels are two more rows; without, two factors are appended. The first stage keeps
  each input row as a struct and asks ALS three times: (user, movie), (user, 0), (0, movie); the
  last takes the first answer that is not NaN, else ``mu`` (both unknown), clips it to the rating
  scale, and returns the input rows in their order. An earlier version answered the fallback
  with two one-factor ``ALSModel`` lookups: 12 Spark write jobs per logged model instead of 6.

So the logged model predicts what the evaluation scored: ALS where it can, the same bias baseline
where it cannot (to float32 precision: ``mu`` plus an offset is stored as a factor), never NaN.

Folded factors are no ``ALS.fit`` output, and Spark makes an ``ALSModel`` from tables only through
a ``private[ml]`` constructor (absent over Spark Connect). So a fitted recommender holds its
factor tables (:class:`~recsys.models.als_layout.FactorModel`): ``predict`` and ``top_n`` are
DataFrame joins on them, and the ``ALSModel`` of a saved recommender or of the serving pipeline
is written in Spark's own save layout (:mod:`recsys.models.als_layout`) and read back with
``ALSModel.load`` / ``PipelineModel.load``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from recsys.core import fs
from recsys.core.constants import (
    ALS_BLOCKS_CONF,
    ITEM_COL,
    MAX_RATING,
    MIN_RATING,
    PREDICTION_COL,
    RATING_COL,
    SCORE_COL,
    USER_COL,
)
from recsys.core.errors import RecsysError
from recsys.core.params import MAX_ITER, SEED, check_int, param, validate
from recsys.models.als_layout import FactorModel, files_for, write_als_model, write_pipeline_model
from recsys.models.base import Recommender, read_meta

_ROW, _ALS, _IN, _TRY = "_recsys_row", "_recsys_als", "_recsys_in", "_recsys_try"
_PU, _PI, _K = "_recsys_user", "_recsys_movie", "_recsys_k"
#: The id of an explicit served model's fallback rows (MovieLens ids are >= 1; see _with_fallback).
SENTINEL_ID = 0


@dataclass(frozen=True)
class ALSConfig:
    """Parameters of one ALS model; exactly these fields are logged as the run's params."""

    rank: int = param(10, "Latent factors.", low=1)
    """Number of latent factors per user and movie."""
    reg_param: float = param(0.1, "L2 regularisation.", low=0.0)
    """L2 regularisation ``lambda``; Spark scales it by each user's/movie's rating count."""
    max_iter: int = MAX_ITER.field()
    """Alternating least-squares sweeps."""
    alpha: float = param(1.0, "Implicit confidence weight.", low=0.0, low_open=True)
    """Implicit mode only: confidence ``1 + alpha * rating`` given to an observed rating."""
    implicit_prefs: bool = param(False, "true: implicit-feedback ALS (ranking); false: explicit "
                                       "(ratings, RMSE).")
    """False: fit the ratings (explicit feedback); True: fit preferences weighted by confidence."""
    nonnegative: bool = param(False, "Non-negative factors.")
    """Constrain factors to be >= 0 (NNLS instead of Cholesky solves)."""
    seed: int = SEED.field(help="Seed of the factors' random initialisation.")
    biases: bool = param(True, "Explicit mode: fit ALS to the residuals of the bias baseline and add the "
                               "biases back.")
    """Explicit mode: fit the factors to the residuals of the bias baseline (global mean, damped
    user and movie offsets) and add the biases back. Implicit mode has no ratings to offset: it is
    always stored (and logged) as False there."""

    def __post_init__(self):
        validate(self)
        object.__setattr__(self, "biases", self.biases and not self.implicit_prefs)

    @property
    def feedback(self) -> str:
        return "implicit" if self.implicit_prefs else "explicit"

    def as_params(self) -> dict:
        return asdict(self)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


class ALSRecommender(Recommender):
    """Spark ALS; ``top_n`` and ``score_all`` use the fitted factors directly."""

    name = "als"

    def __init__(self, config: ALSConfig | None = None, baseline=None, **kwargs):
        """``baseline``: a :class:`~recsys.models.bias.BiasBaseline` already fitted on the training
        data ``fit`` will get (a search fits it once for all its trials); by default ``fit``
        fits its own."""
        self.config = config if config is not None else ALSConfig(**kwargs)
        self.baseline = baseline
        self.predicts_ratings = not self.config.implicit_prefs
        self.model = None  # pyspark.ml.recommendation.ALSModel

    @classmethod
    def from_model(cls, als_model, config: ALSConfig) -> ALSRecommender:
        """Wrap an already fitted ``ALSModel`` or :class:`~recsys.models.als_layout.FactorModel`
        (e.g. the ALS stage of a logged serving model)."""
        out = cls(config)
        out.model = FactorModel.of(als_model)
        return out

    def fit(self, train) -> ALSRecommender:
        from pyspark.ml.recommendation import ALS

        c = self.config
        als = ALS(rank=c.rank, regParam=c.reg_param, maxIter=c.max_iter, alpha=c.alpha,
                  implicitPrefs=c.implicit_prefs, nonnegative=c.nonnegative, seed=c.seed,
                  userCol=USER_COL, itemCol=ITEM_COL, ratingCol=RATING_COL, coldStartStrategy="nan")
        als.setPredictionCol(PREDICTION_COL)
        blocks = train.sparkSession.conf.get(ALS_BLOCKS_CONF, None)
        if blocks:  # Spark's default is 10 user and 10 item blocks, whatever the cluster
            als.setNumBlocks(check_int(ALS_BLOCKS_CONF, blocks, low=1))
        if not c.biases:
            self.model = FactorModel.of(als.fit(train))
            return self
        from recsys.models.bias import BiasBaseline

        if self.baseline is not None:  # the caller's: its cached residuals serve every fit on train
            self.model = with_biases(als.fit(self.baseline.cached_residuals(train)), self.baseline)
            return self
        bias = BiasBaseline().fit(train)
        residuals = bias.residuals(train).cache()
        try:
            self.model = with_biases(als.fit(residuals), bias)
        finally:
            residuals.unpersist()
            bias.release()
        return self

    def factors(self):
        """``(userFactors, itemFactors)``: their dot product is this model's score (biases folded
        in), which lets the evaluation rank with :func:`recsys.evaluation.topk.top_k_unseen` in one pass."""
        self._check_fitted()
        return self.model.userFactors, self.model.itemFactors

    def release(self) -> None:
        """Free the cached factor tables (the model stays usable: Spark recomputes on demand)."""
        if self.model is not None:
            self.model.userFactors.unpersist()
            self.model.itemFactors.unpersist()

    def _check_fitted(self):
        if self.model is None:
            raise RecsysError("als model is not fitted: call fit(train) or load(spark, path) first")

    def top_n(self, users, n: int):
        """Each user's ``n`` best movies by score (ties: lower movie id first). Scores every
        (user, movie) pair of ``users``: the evaluation and the batch lists rank from
        :meth:`factors` instead (``recsys.evaluation.topk``), this is for a few users."""
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        order = Window.partitionBy(USER_COL).orderBy(F.col(SCORE_COL).desc(), F.col(ITEM_COL))
        return (self.score_all(users).withColumn("_r", F.row_number().over(order))
                .where(F.col("_r") <= int(n)).drop("_r"))

    def score_all(self, users):
        from pyspark.sql import functions as F

        self._check_fitted()
        u = (self.model.userFactors.join(users.select(F.col(USER_COL).alias("id")).distinct(), "id")
             .select(F.col("id").alias(USER_COL), F.col("features").alias("_u")))
        v = self.model.itemFactors.select(F.col("id").alias(ITEM_COL), F.col("features").alias("_v"))
        dot = F.aggregate(F.zip_with("_u", "_v", lambda a, b: a.cast("double") * b.cast("double")),
                          F.lit(0.0), lambda acc, x: acc + x)
        return u.crossJoin(v).select(USER_COL, ITEM_COL, dot.alias(SCORE_COL))

    def predict(self, pairs):
        """``pairs`` plus ``prediction``: the factors' dot product (clipped to the rating scale
        in explicit mode), null where the user or the movie has no factors."""
        from pyspark.sql import functions as F

        self._check_fitted()
        u = self.model.userFactors.select(F.col("id").alias("_pu"), F.col("features").alias("_u"))
        v = self.model.itemFactors.select(F.col("id").alias("_pi"), F.col("features").alias("_v"))
        out = (pairs.join(u, pairs[USER_COL] == u["_pu"], "left")
               .join(v, pairs[ITEM_COL] == v["_pi"], "left"))
        raw = F.aggregate(F.zip_with("_u", "_v", lambda a, b: a.cast("double") * b.cast("double")),
                          F.lit(0.0), lambda acc, x: acc + x)
        if self.predicts_ratings:  # greatest/least skip nulls: an unknown id stays null
            raw = F.when(raw.isNotNull(), F.least(F.greatest(raw, F.lit(MIN_RATING)), F.lit(MAX_RATING)))
        return out.select(*pairs.columns, raw.alias(PREDICTION_COL))

    def save(self, path: str) -> None:
        """Write ``path/als`` (Spark's ALSModel layout: ``ALSModel.load`` reads it) and
        ``path/config.json`` (written last)."""
        self._check_fitted()
        spark = self.model.userFactors.sparkSession
        if fs.exists(spark, path):
            raise RecsysError(f"als: {path} already exists; give a new directory")
        write_als_model(fs.join(path, "als"), self.model, _stage_params(USER_COL, ITEM_COL, PREDICTION_COL))
        fs.write_text(spark, fs.join(path, "config.json"),
                      json.dumps({"model": "als", "config": self.config.as_params(), "format": 1}))

    @classmethod
    def load(cls, spark, path: str) -> ALSRecommender:
        from pyspark.ml.recommendation import ALSModel

        meta = read_meta(spark, path, "als", "an ALS model")
        out = cls(ALSConfig(**meta["config"]))
        out.model = FactorModel.of(ALSModel.load(fs.to_uri(fs.join(path, "als"))))
        return out

    # ------------------------------------------------------------ serving form

    def write_serving_model(self, path: str, fallback=None) -> None:
        """Write the ``PipelineModel`` to log at ``path`` (see the module docstring; read it with
        ``PipelineModel.load``): ``userId, movieId`` -> ``prediction`` (double, never NaN), input
        order kept.

        ``fallback``: a fitted :class:`~recsys.models.bias.BiasBaseline` (required in explicit
        mode: it is the one the evaluation used, so served and evaluated predictions agree).
        """
        from pyspark.ml.feature import SQLTransformer

        self._check_fitted()
        spark = self.model.userFactors.sparkSession
        uid = f"PipelineModel_{self.model.uid}"
        numbered = f"SELECT *, monotonically_increasing_id() AS {_ROW} FROM __THIS__"
        if not self.predicts_ratings:
            value = f"CASE WHEN {_ALS} IS NULL OR isnan({_ALS}) THEN 0.0 ELSE {_ALS} END"
            write_pipeline_model(path, spark, uid, [
                SQLTransformer(statement=numbered),
                (self.model, _stage_params(USER_COL, ITEM_COL, _ALS)),
                SQLTransformer(statement=f"SELECT * EXCEPT ({_ROW}, {_ALS}), CAST({value} AS DOUBLE) "
                                         f"AS {PREDICTION_COL} FROM __THIS__ ORDER BY {_ROW}")])
            return
        if fallback is None or getattr(fallback, "global_mean", None) is None:
            raise RecsysError("als serving model: explicit mode needs a fitted BiasBaseline fallback")
        mu = float(fallback.global_mean)
        rank, users, items = _with_fallback(self.model, fallback, self.config.biases)
        # one sentinel row more on each side: known row counts spare two count jobs when written
        rows = None if self.model.rows is None else (self.model.rows[0] + 1, self.model.rows[1] + 1)
        served = FactorModel(self.model.uid, rank, users, items, rows)
        # each input row three times: (user, movie), (user, SENTINEL), (SENTINEL, movie); the
        # first that ALS can score wins (_K orders them), else both are unknown: mu
        user, movie = f"{_IN}.{USER_COL}", f"{_IN}.{ITEM_COL}"
        tries = ", ".join(f"named_struct('{_PU}', {u}, '{_PI}', {i}, '{_K}', {k})" for k, (u, i) in
                          enumerate([(user, movie), (user, SENTINEL_ID), (SENTINEL_ID, movie)]))
        explode = (f"SELECT * FROM (SELECT struct(*) AS {_IN}, monotonically_increasing_id() AS {_ROW} "
                   f"FROM __THIS__) LATERAL VIEW inline(array({tries})) {_TRY}")
        lo, hi = repr(float(MIN_RATING)), repr(float(MAX_RATING))
        pick = f"min_by({_ALS}, {_K}) FILTER (WHERE NOT isnan({_ALS}))"
        value = f"least(greatest(coalesce({pick}, {mu!r}), {lo}), {hi})"
        collect = (f"SELECT {_IN}.*, {PREDICTION_COL} FROM (SELECT {_ROW}, first({_IN}) AS {_IN}, "
                   f"CAST({value} AS DOUBLE) AS {PREDICTION_COL} FROM __THIS__ GROUP BY {_ROW}) "
                   f"ORDER BY {_ROW}")
        write_pipeline_model(path, spark, uid, [SQLTransformer(statement=explode),
                                                (served, _stage_params(_PU, _PI, _ALS)),
                                                SQLTransformer(statement=collect)])

    @staticmethod
    def from_serving_model(pipeline_model, config: ALSConfig) -> ALSRecommender:
        """The recommender inside a model built by :meth:`serving_model`: its ALS stage, without
        an explicit model's sentinel rows (with ``biases`` false, its two appended factors stay:
        they add exactly 0 to every score)."""
        from pyspark.ml.recommendation import ALSModel
        from pyspark.sql import functions as F

        als = [s for s in pipeline_model.stages if isinstance(s, ALSModel)]
        if not als:
            raise RecsysError("this pipeline model holds no ALS stage: not a recsys ALS model")
        model = FactorModel.of(als[0])
        if als[0].isDefined(als[0].userCol) and als[0].getUserCol() == _PU:  # explicit: see _with_fallback
            real = F.col("id") != SENTINEL_ID
            model = FactorModel(model.uid, model.rank, model.userFactors.where(real),
                                model.itemFactors.where(real))
        return ALSRecommender.from_model(model, config)


def with_biases(residual_model, bias):
    """The rank + 2 ``ALSModel`` of ``mu + b_u + b_i + p_u . q_i`` (see the module docstring).

    Every user and movie of the training data has an offset (the baseline is fitted on the same
    rows), so the inner joins drop nothing. Factor tables are cached (one row per user / movie).
    """
    from pyspark.sql import functions as F

    mu = float(bias.global_mean)
    one = F.lit(1.0).cast("float")
    users = (residual_model.userFactors
             .join(bias.user_bias.select(F.col(USER_COL).alias("id"), "user_bias"), "id")
             .select("id", F.concat("features", F.array(one, (F.lit(mu) + F.col("user_bias")).cast("float")))
                     .alias("features")).cache())
    items = (residual_model.itemFactors
             .join(bias.item_bias.select(F.col(ITEM_COL).alias("id"), "item_bias"), "id")
             .select("id", F.concat("features", F.array(F.col("item_bias").cast("float"), one))
                     .alias("features")).cache())
    rows = int(users.count()), int(items.count())
    return FactorModel(residual_model.uid, residual_model.rank + 2, users, items, rows)


def _stage_params(user_col: str, item_col: str, prediction_col: str) -> dict:
    """The params of a written ALS stage: its columns, NaN for an unknown id."""
    return {"userCol": user_col, "itemCol": item_col, "predictionCol": prediction_col,
            "coldStartStrategy": "nan", "blockSize": 4096}


def _with_fallback(model, fallback, folded: bool):
    """``(rank, users, items)``: the factor tables of an explicit model's served ``ALSModel``,
    which also scores the bias baseline (``mu``, offsets ``b``) where ``model`` cannot: a
    sentinel user and movie (id :data:`SENTINEL_ID`) such that (user, sentinel) scores
    ``mu + b_user``, (sentinel, movie) ``mu + b_movie`` and (sentinel, sentinel) ``mu``, while
    every (user, movie) of ``model`` scores as before.

    - ``folded`` (``biases``: the factors are ``[p_u, 1, mu + b_u]`` and ``[q_i, b_i, 1]``, with
      ``fallback`` the baseline folded in): only the sentinels are added, user
      ``[0, 1, mu]`` and movie ``[0, 0, 1]``. No join, so the model's save runs no extra job.
    - otherwise two factors are appended, user ``[f_u, mu + b_u, 0]`` and movie
      ``[g_i, 0, mu + b_i]`` (a missing offset counts 0, as in the baseline), with sentinels
      ``[0, mu, 1]`` and ``[0, 1, 0]``. The extra products are exactly 0 for every (user, movie).
    """
    from pyspark.sql import functions as F

    spark = model.userFactors.sparkSession
    mu = float(fallback.global_mean)
    rows = model.rows or (None, None)
    files = (files_for(model.userFactors, model.rank, rows[0]),
             files_for(model.itemFactors, model.rank, rows[1]))
    if folded:
        rank, users, items = model.rank, model.userFactors, model.itemFactors
        sentinels = [0.0] * (rank - 2) + [1.0, mu], [0.0] * (rank - 2) + [0.0, 1.0]
    else:
        rank = model.rank + 2

        zero = F.lit(0.0).cast("float")

        def with_offset(factors, offsets, key, column, user_side):
            offset = (F.lit(mu) + F.coalesce(F.col(column), F.lit(0.0))).cast("float")
            tail = F.array(offset, zero) if user_side else F.array(zero, offset)
            return (factors.join(offsets.select(F.col(key).cast("int").alias("id"), column), "id", "left")
                    .select("id", F.concat("features", tail).alias("features")))

        users = with_offset(model.userFactors, fallback.user_bias, USER_COL, "user_bias", True)
        items = with_offset(model.itemFactors, fallback.item_bias, ITEM_COL, "item_bias", False)
        sentinels = [0.0] * model.rank + [mu, 1.0], [0.0] * model.rank + [1.0, 0.0]
    schema = "id int, features array<float>"
    # as many partitions (files in the saved model) as the factor tables get alone
    return rank, *(table.unionByName(spark.createDataFrame([(SENTINEL_ID, vector)], schema)).coalesce(n)
                   for table, vector, n in zip((users, items), sentinels, files, strict=True))
