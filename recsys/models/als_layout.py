"""ALS models as factor tables, written in Spark ML's save layout with public APIs only.

Spark ML saves an ``ALSModel`` as a folder of three parts, read back by ``ALSModel.load``:

- ``metadata/``: one line of JSON (a text file written by Spark): ``class``
  (``org.apache.spark.ml.recommendation.ALSModel``), ``timestamp``, ``sparkVersion``, ``uid``,
  ``paramMap`` and ``defaultParamMap`` (param name -> value), and ``rank``;
- ``userFactors/`` and ``itemFactors/``: Parquet, ``id int, features array<float>``.

A ``PipelineModel`` saved from Python is ``metadata/`` (``class``
``pyspark.ml.pipeline.PipelineModel``, ``paramMap.stageUids``, ``paramMap.language`` "Python")
and ``stages/<index>_<uid>/``, one saved stage each.

recsys folds a bias baseline into the factors (``recsys.models.als``), which gives factor tables
that no ``ALS.fit`` produced. Spark builds an ``ALSModel`` from tables only through a
``private[ml]`` constructor, reachable from a classic driver's JVM and not at all over Spark
Connect; so recsys keeps such a model as its tables (:class:`FactorModel`) and, where an
``ALSModel`` is needed on disk (a saved recommender, the logged serving pipeline), writes this
layout with DataFrame writes. Both work under classic Spark and Spark Connect.
``tests/unit/models/test_als_layout.py`` round-trips models through ``ALSModel.load`` and
``PipelineModel.load``: a Spark release that changes the layout fails there, loudly.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

from recsys.core import fs

ALS_MODEL_CLASS = "org.apache.spark.ml.recommendation.ALSModel"
PIPELINE_MODEL_CLASS = "pyspark.ml.pipeline.PipelineModel"
#: ``defaultParamMap`` of a saved ``ALSModel``, as Spark 4 writes it: ``ALSModel.load`` sets the
#: model's defaults from it alone (without ``coldStartStrategy`` there, ``transform`` fails).
ALS_MODEL_DEFAULTS = {"blockSize": 4096, "coldStartStrategy": "nan", "itemCol": "item",
                      "predictionCol": "prediction", "userCol": "user"}
#: Bytes per Parquet file of a written factor table (one partition each).
BYTES_PER_FILE = 128 * 1024 * 1024


@dataclass
class FactorModel:
    """An ALS model as its factor tables (``id int, features array<float>``), with the
    attribute names of ``pyspark.ml.recommendation.ALSModel`` (which also fits this shape).

    ``rows``: ``(users, items)`` when known (saves a count when the model is written)."""

    uid: str
    rank: int
    userFactors: object  # noqa: N815 - ALSModel's names
    itemFactors: object  # noqa: N815
    rows: tuple[int, int] | None = None

    @classmethod
    def of(cls, model) -> FactorModel:
        """``model`` itself, or the tables of a fitted or loaded ``ALSModel``."""
        if isinstance(model, FactorModel):
            return model
        return cls(model.uid, int(model.rank), model.userFactors, model.itemFactors)


def _metadata(spark, class_name: str, uid: str, params: dict, defaults: dict, **extra) -> str:
    return json.dumps({"class": class_name, "timestamp": int(time.time() * 1000),
                       "sparkVersion": spark.version, "uid": uid, "paramMap": params,
                       "defaultParamMap": defaults, **extra}, separators=(",", ":"))


def _write_metadata(spark, path: str, text: str) -> None:
    meta = spark.createDataFrame([(text,)], "value string").coalesce(1)
    meta.write.text(fs.to_uri(fs.join(path, "metadata")))


def files_for(table, rank: int, rows: int | None = None) -> int:
    """Partitions (files) for a factor table of ``rows`` rows (counted when not given): one per
    :data:`BYTES_PER_FILE` of its Parquet-sized rows."""
    n = int(table.count()) if rows is None else int(rows)
    return max(1, math.ceil(n * (8 + 4 * rank) / BYTES_PER_FILE))


def write_als_model(path: str, model: FactorModel, params: dict) -> None:
    """Write ``model`` at ``path`` (which must not exist) in Spark's ``ALSModel`` layout, with
    ``params`` (e.g. ``userCol``, ``itemCol``, ``predictionCol``, ``coldStartStrategy``) set.
    ``ALSModel.load(path)`` reads it back."""
    from pyspark.sql import functions as F

    spark = model.userFactors.sparkSession
    _write_metadata(spark, path, _metadata(spark, ALS_MODEL_CLASS, model.uid, params, ALS_MODEL_DEFAULTS,
                                          rank=int(model.rank)))
    rows = model.rows or (None, None)
    for name, table, n in (("userFactors", model.userFactors, rows[0]),
                           ("itemFactors", model.itemFactors, rows[1])):
        out = table.select(F.col("id").cast("int").alias("id"),
                           F.col("features").cast("array<float>").alias("features"))
        out.coalesce(files_for(table, model.rank, n)).write.parquet(fs.to_uri(fs.join(path, name)))


def write_pipeline_model(path: str, spark, uid: str, stages: list) -> None:
    """Write a ``PipelineModel`` (uid ``uid``) at ``path`` in Spark's Python layout. ``stages``
    holds Spark ML stages (saved with their own writer) and ``(FactorModel, params)`` pairs
    (saved by :func:`write_als_model`)."""
    uids, writers = [], []
    for stage in stages:
        if isinstance(stage, tuple):
            model, params = stage
            uids.append(model.uid)
            writers.append(lambda where, m=model, p=params: write_als_model(where, m, p))
        else:
            uids.append(stage.uid)
            writers.append(lambda where, s=stage: s.write().save(fs.to_uri(where)))
    _write_metadata(spark, path, _metadata(spark, PIPELINE_MODEL_CLASS, uid,
                                           {"stageUids": uids, "language": "Python"}, {}))
    digits = len(str(len(uids)))  # Spark's reader zero-pads the index to this width
    for index, (stage_uid, write) in enumerate(zip(uids, writers, strict=True)):
        write(fs.join(path, "stages", f"{str(index).zfill(digits)}_{stage_uid}"))
