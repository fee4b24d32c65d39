"""The contract with Spark ML's save layout (recsys.models.als_layout): folded ALS models are
written with DataFrame writes and read back by Spark's own ``ALSModel.load`` and
``PipelineModel.load``. A Spark release that changes the layout fails here."""

import json

import pytest

from recsys.models import FactorModel, write_als_model, write_pipeline_model

FACTORS = "id int, features array<float>"
USERS = {1: [1.0, 0.5, -2.0], 2: [0.25, 2.0, 1.0], 3: [0.0, -1.0, 0.5]}
ITEMS = {10: [2.0, 1.0, 0.5], 11: [-1.0, 0.5, 4.0]}


def _model(spark, uid="ALS_contract"):
    return FactorModel(uid, 3, spark.createDataFrame(list(USERS.items()), FACTORS),
                       spark.createDataFrame(list(ITEMS.items()), FACTORS))


def _metadata(spark, path):
    return json.loads(spark.read.text(f"{path}/metadata").first()["value"])


def test_written_als_model_loads_with_spark_and_scores_the_dot_product(spark, tmp_path):
    from pyspark.ml.recommendation import ALSModel

    path = str(tmp_path / "als")
    write_als_model(path, _model(spark), {"userCol": "u", "itemCol": "i", "predictionCol": "p",
                                          "coldStartStrategy": "nan", "blockSize": 4096})
    model = ALSModel.load(path)
    assert (model.uid, model.rank) == ("ALS_contract", 3)
    assert (model.getUserCol(), model.getItemCol(), model.getPredictionCol()) == ("u", "i", "p")
    assert {r["id"]: list(r["features"]) for r in model.userFactors.collect()} == USERS
    pairs = spark.createDataFrame([(1, 10), (2, 11), (3, 10), (4, 10)], "u int, i int")
    got = {(r["u"], r["i"]): r["p"] for r in model.transform(pairs).collect()}
    for (u, i), value in got.items():
        if u in USERS:
            expected = sum(a * b for a, b in zip(USERS[u], ITEMS[i], strict=True))
            assert value == pytest.approx(expected, rel=1e-6)
    assert got[(4, 10)] != got[(4, 10)]  # NaN: coldStartStrategy "nan" was read back


def test_our_metadata_has_every_key_sparks_own_writer_writes(spark, tmp_path):
    """If Spark adds a key to what ALS and Pipeline models save, our writer must learn it."""
    from pyspark.ml import PipelineModel
    from pyspark.ml.feature import SQLTransformer
    from pyspark.ml.recommendation import ALS

    ratings = spark.createDataFrame([(u, i, float(u + i)) for u in range(1, 6) for i in range(1, 6)],
                                    "userId int, movieId int, rating float")
    fitted = ALS(rank=2, maxIter=1, userCol="userId", itemCol="movieId", seed=1).fit(ratings)
    PipelineModel(stages=[SQLTransformer(statement="SELECT * FROM __THIS__"), fitted]).write().save(
        str(tmp_path / "spark"))
    ours = str(tmp_path / "ours")
    write_pipeline_model(ours, spark, "PipelineModel_ours", [
        SQLTransformer(statement="SELECT * FROM __THIS__"),
        (FactorModel.of(fitted), {"userCol": "userId", "itemCol": "movieId"})])
    theirs_pipeline, ours_pipeline = _metadata(spark, tmp_path / "spark"), _metadata(spark, ours)
    assert set(theirs_pipeline) <= set(ours_pipeline)
    # a classic driver saves an all-JVM pipeline with the JVM's writer, a Connect client with
    # Python's (the "language" param); PipelineModel.load reads both, we write Python's
    assert (theirs_pipeline["class"], ours_pipeline["class"]) in {
        ("org.apache.spark.ml.PipelineModel", "pyspark.ml.pipeline.PipelineModel"),
        ("pyspark.ml.pipeline.PipelineModel", "pyspark.ml.pipeline.PipelineModel")}
    assert set(theirs_pipeline["paramMap"]) | {"language"} == set(ours_pipeline["paramMap"])
    stage = sorted((tmp_path / "spark" / "stages").iterdir())[1]
    ours_stage = sorted((tmp_path / "ours" / "stages").iterdir())[1]
    assert stage.name == ours_stage.name == f"1_{fitted.uid}"
    theirs_als, ours_als = _metadata(spark, stage), _metadata(spark, ours_stage)
    assert set(theirs_als) <= set(ours_als) and theirs_als["class"] == ours_als["class"]
    assert theirs_als["defaultParamMap"] == ours_als["defaultParamMap"]
    assert sorted(p.name for p in stage.iterdir()) == sorted(p.name for p in ours_stage.iterdir())
    loaded = PipelineModel.load(ours)
    assert [type(s).__name__ for s in loaded.stages] == ["SQLTransformer", "ALSModel"]
    pairs = ratings.select("userId", "movieId")
    expected = {(r["userId"], r["movieId"]): r["prediction"] for r in fitted.transform(pairs).collect()}
    got = {(r["userId"], r["movieId"]): r["prediction"] for r in loaded.transform(pairs).collect()}
    assert got == expected
