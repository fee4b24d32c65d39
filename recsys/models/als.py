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
  is exactly the prediction above, so everything that uses an ``ALSModel`` (``transform``,
  ``recommendForUserSubset``, save/load, the logged model) needs nothing else.
- **implicit**: Hu, Koren & Volinsky's confidence model (``c = 1 + alpha * rating``); the scores
  are preferences, not ratings (``predicts_ratings`` False), and it is judged on ranking only.

:meth:`ALSRecommender.serving_model` builds the model that is logged to MLflow: a Spark
``PipelineModel`` made only of JVM stages, so ``mlflow.pyfunc.load_model`` and
``mlflow.spark.load_model`` need nothing but pyspark (no recsys code travels with the model):

1. ``SQLTransformer``: numbers the input rows (``_recsys_row``) and adds a constant id 0
   (``_recsys_zero``);
2. the fitted ``ALSModel`` (``coldStartStrategy="nan"``) -> ``_recsys_als``;
3. explicit mode only, two one-factor ``ALSModel`` lookups holding the evaluation's
   :class:`~recsys.models.bias.BiasBaseline` offsets: user offsets keyed by ``userId`` against
   item id 0 (factor 1.0) -> ``_recsys_bu``, and movie offsets keyed by ``movieId`` against user
   id 0 -> ``_recsys_bi``. An ALS model is a distributed id -> vector lookup plus a dot product,
   which is exactly a join with a bias table; MovieLens ids are >= 1, so 0 is free;
4. ``SQLTransformer``: ``prediction`` = the clipped ALS rating, or where ALS gives NaN (an
   unknown user or movie) the bias baseline ``mu + b_user + b_movie`` (offset 0 when unknown),
   clipped; in implicit mode NaN becomes 0.0 (no evidence of preference). Rows come back in
   input order (ALS's joins shuffle them; pyfunc pairs outputs with inputs by position).

So the logged model predicts exactly what the evaluation scored: ALS where it can, the same
bias baseline where it cannot, never NaN. The lookups are built with the JVM ``ALSModel``
constructor, which Scala marks ``private[ml]`` (public in bytecode); the tests pin it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields

from recsys import fs
from recsys.constants import (
    ALS_BLOCKS_CONF,
    ITEM_COL,
    MAX_RATING,
    MIN_RATING,
    PREDICTION_COL,
    RATING_COL,
    SCORE_COL,
    USER_COL,
)
from recsys.errors import RecsysError
from recsys.models.base import Recommender, read_meta
from recsys.params import MAX_ITER, SEED, check_int, param, validate

_ROW, _ZERO, _ALS, _BU, _BI = "_recsys_row", "_recsys_zero", "_recsys_als", "_recsys_bu", "_recsys_bi"


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
        """Wrap an already fitted ``ALSModel`` (e.g. stage 2 of a logged serving model)."""
        out = cls(config)
        out.model = als_model.copy()
        out.model.setPredictionCol(PREDICTION_COL).setColdStartStrategy("nan")
        out.model.setUserCol(USER_COL).setItemCol(ITEM_COL)
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
            self.model = als.fit(train)
            return self
        from recsys.models.bias import BiasBaseline

        if self.baseline is not None:  # the caller's: its cached residuals serve every fit on train
            self.model = _with_biases(als.fit(self.baseline.cached_residuals(train)), self.baseline)
            return self
        bias = BiasBaseline().fit(train)
        residuals = bias.residuals(train).cache()
        try:
            self.model = _with_biases(als.fit(residuals), bias)
        finally:
            residuals.unpersist()
            bias.release()
        return self

    def factors(self):
        """``(userFactors, itemFactors)``: their dot product is this model's score (biases folded
        in), which lets the evaluation rank with :func:`recsys.topk.top_k_unseen` in one pass."""
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
        from pyspark.sql import functions as F

        self._check_fitted()
        recs = self.model.recommendForUserSubset(users.select(USER_COL), int(n))
        return (recs.select(USER_COL, F.explode("recommendations").alias("_r"))
                .select(USER_COL, F.col(f"_r.{ITEM_COL}").alias(ITEM_COL),
                        F.col("_r.rating").cast("double").alias(SCORE_COL)))

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
        from pyspark.sql import functions as F

        self._check_fitted()
        out = self.model.transform(pairs)
        raw = F.col(PREDICTION_COL).cast("double")
        if self.predicts_ratings:
            raw = F.least(F.greatest(raw, F.lit(MIN_RATING)), F.lit(MAX_RATING))
        # least/greatest skip NaN-as-null differently: decide on the raw value first
        value = F.when(F.isnan(F.col(PREDICTION_COL)), F.lit(None).cast("double")).otherwise(raw)
        return out.withColumn(PREDICTION_COL, value)

    def save(self, path: str) -> None:
        """Write ``path/als`` (Spark's ALSModel format) and ``path/config.json`` (written last)."""
        self._check_fitted()
        spark = self.model.userFactors.sparkSession
        if fs.exists(spark, path):
            raise RecsysError(f"als: {path} already exists; give a new directory")
        self.model.save(fs.to_uri(fs.join(path, "als")))
        fs.write_text(spark, fs.join(path, "config.json"),
                      json.dumps({"model": "als", "config": self.config.as_params(), "format": 1}))

    @classmethod
    def load(cls, spark, path: str) -> ALSRecommender:
        from pyspark.ml.recommendation import ALSModel

        meta = read_meta(spark, path, "als", "an ALS model")
        out = cls(ALSConfig(**meta["config"]))
        out.model = ALSModel.load(fs.to_uri(fs.join(path, "als")))
        return out

    # ------------------------------------------------------------ serving form

    def serving_model(self, fallback=None):
        """The ``PipelineModel`` to log (see the module docstring): ``userId, movieId`` ->
        ``prediction`` (double, never NaN), input order kept.

        ``fallback``: a fitted :class:`~recsys.models.bias.BiasBaseline` (required in explicit
        mode: it is the one the evaluation used, so served and evaluated predictions agree).
        """
        from pyspark.ml import PipelineModel
        from pyspark.ml.feature import SQLTransformer

        self._check_fitted()
        number = SQLTransformer(
            statement=f"SELECT *, monotonically_increasing_id() AS {_ROW}, 0 AS {_ZERO} FROM __THIS__")
        spark = self.model.userFactors.sparkSession
        # the same factors in fewer partitions: each partition is a file the model's save writes
        # and MLflow copies (ALS's 10 blocks gave 154 files and 3.6 s of logging at 1M ratings)
        als = _factor_model(spark, self.model.uid, self.model.rank, _compact(self.model.userFactors),
                            _compact(self.model.itemFactors))
        als.setPredictionCol(_ALS)
        stages = [number, als]
        if self.predicts_ratings:
            if fallback is None or getattr(fallback, "global_mean", None) is None:
                raise RecsysError("als serving model: explicit mode needs a fitted BiasBaseline fallback")
            stages += [_lookup(spark, fallback.user_bias, USER_COL, "user_bias", side="user", out=_BU),
                       _lookup(spark, fallback.item_bias, ITEM_COL, "item_bias", side="item", out=_BI)]
            lo, hi = repr(float(MIN_RATING)), repr(float(MAX_RATING))
            base = f"{float(fallback.global_mean)!r} + nanvl({_BU}, 0.0) + nanvl({_BI}, 0.0)"
            value = (f"CASE WHEN {_ALS} IS NULL OR isnan({_ALS}) THEN least(greatest({base}, {lo}), {hi}) "
                     f"ELSE least(greatest({_ALS}, {lo}), {hi}) END")
            drop = f"{_ROW}, {_ZERO}, {_ALS}, {_BU}, {_BI}"
        else:
            value = f"CASE WHEN {_ALS} IS NULL OR isnan({_ALS}) THEN 0.0 ELSE {_ALS} END"
            drop = f"{_ROW}, {_ZERO}, {_ALS}"
        stages.append(SQLTransformer(
            statement=f"SELECT * EXCEPT ({drop}), CAST({value} AS DOUBLE) AS {PREDICTION_COL} "
                      f"FROM __THIS__ ORDER BY {_ROW}"))
        return PipelineModel(stages=stages)

    @staticmethod
    def from_serving_model(pipeline_model, config: ALSConfig) -> ALSRecommender:
        """The recommender inside a model built by :meth:`serving_model` (its ALS stage)."""
        from pyspark.ml.recommendation import ALSModel

        als = [s for s in pipeline_model.stages if isinstance(s, ALSModel)]
        if not als:
            raise RecsysError("this pipeline model holds no ALS stage: not a recsys ALS model")
        return ALSRecommender.from_model(als[0], config)


def _with_biases(residual_model, bias):
    """The rank + 2 ``ALSModel`` of ``mu + b_u + b_i + p_u . q_i`` (see the module docstring).

    Every user and movie of the training data has an offset (the baseline is fitted on the same
    rows), so the inner joins drop nothing. Factor tables are cached (one row per user / movie).
    """
    from pyspark.sql import functions as F

    spark = residual_model.userFactors.sparkSession
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
    users.count(), items.count()
    residual_model.userFactors.unpersist()
    residual_model.itemFactors.unpersist()
    return _factor_model(spark, residual_model.uid, residual_model.rank + 2, users, items)


def _factor_model(spark, uid: str, rank: int, users, items):
    """An ``ALSModel`` over the given factor tables (``id int, features array<float>``), reading
    ``userId``/``movieId`` and writing ``prediction`` (NaN for an unknown id)."""
    from pyspark.ml.recommendation import ALSModel

    jvm_cls = spark.sparkContext._jvm.org.apache.spark.ml.recommendation.ALSModel
    jmodel = jvm_cls(uid, rank, users._jdf, items._jdf)
    # on the JVM object too: recommendForUserSubset calls it without passing Python-side params
    jmodel.setUserCol(USER_COL).setItemCol(ITEM_COL).setPredictionCol(PREDICTION_COL)
    jmodel.setColdStartStrategy("nan")
    model = ALSModel(jmodel)
    model.setUserCol(USER_COL).setItemCol(ITEM_COL).setPredictionCol(PREDICTION_COL)
    return model.setColdStartStrategy("nan")


#: Bytes per partition of a factor or offset table in a saved model (one file each).
BYTES_PER_FILE = 128 * 1024 * 1024


def _compact(table):
    """``table`` in one partition per ``BYTES_PER_FILE`` of its size as Spark's planner estimates
    it (exact for a cached table; no Spark job: a count per table cost 0.27 s), never more
    partitions than it has."""
    size = table._jdf.queryExecution().optimizedPlan().stats().sizeInBytes()
    wanted = math.ceil(int(str(size)) / BYTES_PER_FILE)
    return table.coalesce(max(1, min(wanted, table.rdd.getNumPartitions())))


def _lookup(spark, table, key_col: str, value_col: str, *, side: str, out: str):
    """A one-factor ALSModel answering ``table[key]`` (NaN for a missing key); see module doc."""
    from pyspark.sql import functions as F

    values = _compact(table.select(F.col(key_col).cast("int").alias("id"),
                                   F.array(F.col(value_col).cast("float")).alias("features")))
    one = spark.createDataFrame([(0, [1.0])], "id int, features array<float>")
    users, items = (values, one) if side == "user" else (one, values)
    model = _factor_model(spark, f"recsys_{side}_bias", 1, users, items)
    user_col, item_col = (key_col, _ZERO) if side == "user" else (_ZERO, key_col)
    model.setUserCol(user_col).setItemCol(item_col).setPredictionCol(out).setColdStartStrategy("nan")
    return model
