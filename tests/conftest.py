"""One SparkSession for the whole test session, small and quiet; shared test data."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    # Tests never touch the user's ~/.cache/recsys or ./mlflow.db.
    os.environ["RECSYS_CACHE_DIR"] = str(tmp_path_factory.mktemp("recsys-cache"))
    uri = "sqlite:///" + str(tmp_path_factory.mktemp("mlflow") / "mlflow.db")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    yield uri


@pytest.fixture()
def tracking_uri(_isolated_cache, monkeypatch):
    """The session's tracking store, set in the environment for this test. (A test that calls
    ``mlflow.set_tracking_uri(None)`` removes MLFLOW_TRACKING_URI from the environment.)"""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", _isolated_cache)
    return _isolated_cache


@pytest.fixture(scope="session")
def spark(tmp_path_factory, _isolated_cache):
    from recsys.spark import get_spark

    session = get_spark(
        master="local[2]",
        conf={
            "spark.sql.shuffle.partitions": "4",
            "spark.default.parallelism": "4",
            "spark.local.dir": str(tmp_path_factory.mktemp("spark-local")),
            "spark.driver.memory": "2g",
        },
        app_name="recsys-tests",
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def bundled(spark):
    """The bundled ml-latest-small, loaded once (validated and cached as Parquet)."""
    from recsys.data.movielens import load_movielens

    return load_movielens(spark, None, progress=lambda _m: None)


@pytest.fixture(scope="session")
def synthetic_ratings(spark):
    """300 users with 1..60 ratings each over 200 movies; timestamps increase per user."""
    import random

    rng = random.Random(7)
    rows = []
    for user in range(1, 301):
        n = 1 + (user * 37) % 60
        movies = rng.sample(range(1, 201), n)
        for i, movie in enumerate(movies):
            rating = rng.choice([0.5 * k for k in range(1, 11)])
            rows.append((user, movie, rating, 1_000_000 + user * 1000 + i))
    from recsys.data.movielens import spark_schema

    return spark.createDataFrame(rows, spark_schema("ratings")).cache()
