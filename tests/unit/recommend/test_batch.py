"""recsys.batch: every user's top-K against brute force, cold-start users, the users-file reader."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.core import RecsysError
from recsys.data import split_digest
from recsys.recommend import read_users, recommend_all

FACTORS = "id int, features array<float>"


def _brute(users, items, seen, k):
    """{user: [(movie, score)]}: float64 dot products, seen removed, score desc then id asc."""
    out = {}
    for u, fu in users.items():
        scored = sorted((-float(np.dot(np.float64(fu), np.float64(fi))), m) for m, fi in items.items()
                        if (u, m) not in seen)
        out[u] = [(m, -s) for s, m in scored[:k]]
    return out


def _rows(df):
    got = {}
    for r in df.collect():
        got.setdefault(r.userId, []).append((r.rank, r.movieId, r.score))
    return {u: [(m, s) for _, m, s in sorted(rows)] for u, rows in got.items()}


@pytest.fixture(scope="module")
def tiny(spark):
    rng = np.random.default_rng(5)
    users = {u: rng.normal(size=4).astype(np.float32).tolist() for u in range(1, 21)}
    items = {m: rng.normal(size=4).astype(np.float32).tolist() for m in range(100, 160)}
    seen = {(u, m) for u in users for m in items if rng.random() < 0.25}
    seen.add((500, 100))  # a seen pair of user 500, who has no factors
    return (users, items, seen, spark.createDataFrame(list(users.items()), FACTORS),
            spark.createDataFrame(list(items.items()), FACTORS),
            spark.createDataFrame(sorted(seen), "userId int, movieId int"))


def test_recommend_all_matches_numpy_brute_force(tiny):
    users, items, seen, uf, itf, seen_df = tiny
    recs, counts = recommend_all(uf, itf, seen_df, 5)
    assert recs.columns == ["userId", "rank", "movieId", "score"]
    assert [f.dataType.simpleString() for f in recs.schema.fields] == ["int", "int", "int", "double"]
    got, expected = _rows(recs), _brute(users, items, seen, 5)
    assert set(got) == set(expected) == set(range(1, 21))
    for u in expected:
        assert [m for m, _ in got[u]] == [m for m, _ in expected[u]]
        assert np.allclose([s for _, s in got[u]], [s for _, s in expected[u]], rtol=0, atol=1e-9)
    assert counts == {"users": 20, "known_users": 20, "unknown_users": 0, "movies": 60}


def test_unknown_users_get_popularity_minus_their_seen_and_are_counted(spark, tiny):
    users, items, seen, uf, itf, seen_df = tiny
    wanted = spark.createDataFrame([(3,), (7,), (7,), (500,), (501,)], "userId int")
    popular = spark.createDataFrame([(100, 9.0), (101, 9.0), (102, 5.0), (103, 4.0), (104, 1.0)],
                                    "movieId int, score double")
    recs, counts = recommend_all(uf, itf, seen_df, 3, users=wanted, popular=popular)
    got = _rows(recs)
    assert counts == {"users": 4, "known_users": 2, "unknown_users": 2, "movies": 60}
    assert set(got) == {3, 7, 500, 501}
    expected = _brute({u: users[u] for u in (3, 7)}, items, seen, 3)
    assert [m for m, _ in got[3]] == [m for m, _ in expected[3]]
    # 501 rated nothing: the list itself (tie 9.0 broken by movieId); 500 rated 100: it moves up
    assert got[501] == [(100, 9.0), (101, 9.0), (102, 5.0)]
    assert got[500] == [(101, 9.0), (102, 5.0), (103, 4.0)]


def test_default_popularity_is_the_seen_count(spark, tiny):
    _, _, seen, uf, itf, seen_df = tiny
    wanted = spark.createDataFrame([(900,)], "userId int")
    recs, counts = recommend_all(uf, itf, seen_df, 2, users=wanted)
    n = {}
    for _, m in seen:
        n[m] = n.get(m, 0) + 1
    best = sorted(n.items(), key=lambda mc: (-mc[1], mc[0]))[:2]
    assert _rows(recs)[900] == [(m, float(c)) for m, c in best]
    assert counts["unknown_users"] == 1 and counts["known_users"] == 0


def test_bad_k_is_an_error_naming_k(tiny):
    _, _, _, uf, itf, seen_df = tiny
    with pytest.raises(RecsysError, match="k=0"):
        recommend_all(uf, itf, seen_df, 0)


# ---------------------------------------------------------------- users file


def _ids(df):
    return sorted(r.userId for r in df.collect())


def test_read_users_one_id_per_line_and_csv(spark, tmp_path):
    plain = tmp_path / "users.txt"
    plain.write_text("5\n 3\n\n5\n12\n")
    assert _ids(read_users(spark, str(plain))) == [3, 5, 12]
    assert _ids(read_users(spark, "file://" + str(plain))) == [3, 5, 12]
    csv = tmp_path / "users.csv"
    csv.write_text('name,userId\nann,7\nbob,"2"\n')
    assert _ids(read_users(spark, str(csv))) == [2, 7]


def test_read_users_bad_ids_name_the_file_and_line(spark, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("1\n2\nx7\n4\n99999999999\n")
    with pytest.raises(RecsysError) as err:
        read_users(spark, str(bad))
    assert str(bad) in str(err.value)
    assert "line 3: 'x7'" in str(err.value) and "line 5: '99999999999'" in str(err.value)
    csv = tmp_path / "bad.csv"
    csv.write_text("userId,n\n1,2\n-4,3\n")
    with pytest.raises(RecsysError, match=r"bad\.csv: the userId column .* line 3: '-4,3'"):
        read_users(spark, str(csv))


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"), ("", "is empty"), ("user,n\n1,2\n", "neither a user id nor"),
    ("userId\n\n", "holds no user ids")])
def test_read_users_rejects_missing_empty_and_headerless_files(spark, tmp_path, content, message):
    path = tmp_path / "users.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(RecsysError, match=message):
        read_users(spark, str(path))


# ---------------------------------------------------------------- the `recommend` job


@pytest.fixture(scope="module")
def fake_recommender(spark, tmp_path_factory):
    """A split of tiny ratings and a logged run whose ``recommender`` artifact has the served
    model's layout: ``artifacts/spark_model`` (a Spark-flavor PipelineModel holding an ALSModel
    built from known factors) and ``artifacts/factors/meta.json``."""
    import json

    import mlflow

    from recsys.data import SplitConfig, make_split
    from recsys.mlops import save_als_model
    from recsys.models import ALSConfig, ALSRecommender, FactorModel

    root = tmp_path_factory.mktemp("fake-recommender")
    rng = np.random.default_rng(11)
    users = {u: rng.normal(size=3).astype(np.float32).tolist() for u in range(1, 9)}
    items = {m: rng.normal(size=3).astype(np.float32).tolist() for m in range(10, 31)}
    ratings = [(u, m, 4.0, 1_000 + i) for i, (u, m) in enumerate(
        (u, m) for u in users for m in items if rng.random() < 0.4)]
    split_dir = str(root / "split")
    manifest, _ = make_split(spark, spark.createDataFrame(ratings, "userId int, movieId int, rating double, "
                                                          "timestamp long"),
                             SplitConfig(), split_dir, source="tiny", source_checksum="tiny-1",
                             progress=lambda _m: None)
    train = {(r.userId, r.movieId) for r in spark.read.parquet(split_dir + "/train").collect()}
    als = FactorModel("als_fake", 3, spark.createDataFrame(list(users.items()), FACTORS),
                      spark.createDataFrame(list(items.items()), FACTORS))
    model_dir = root / "recommender"
    save_als_model(ALSRecommender.from_model(als, ALSConfig(implicit_prefs=True)), None,
                   str(model_dir / "artifacts" / "spark_model"))
    (model_dir / "artifacts" / "factors").mkdir()
    (model_dir / "artifacts" / "factors" / "meta.json").write_text(json.dumps(
        {"split_dir": split_dir, "split_digest": split_digest(manifest), "kind": "implicit"}))
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(model_dir), "recommender")
    return {"run_id": run.info.run_id, "users": users, "items": items, "train": train, "split_dir": split_dir,
            "root": root}


def test_recommend_job_writes_every_users_top_k_and_logs_counts(spark, tracking_uri, fake_recommender,
                                                                 tmp_path):
    import mlflow

    from recsys import jobs

    fake = fake_recommender
    out = str(tmp_path / "recs")
    manifest = jobs.recommend(model_uri=fake["run_id"], output=out, k=3, split_dir="",
                              spark_master="local[2]")
    got = _rows(spark.read.parquet(out))
    expected = _brute(fake["users"], fake["items"], fake["train"], 3)
    assert {u: [m for m, _ in rows] for u, rows in got.items()} == {u: [m for m, _ in rows]
                                                                    for u, rows in expected.items()}
    assert manifest["counts"]["rows"] == 24 and manifest["counts"]["unknown_users"] == 0
    run = mlflow.search_runs(experiment_names=["recsys"], filter_string="tags.`recsys.stage` = 'recommend'",
                             output_format="list")[0]
    assert run.info.run_name == f"recommend {fake['run_id']} k=3"
    assert run.data.metrics["users"] == 8 and run.data.metrics["rows"] == 24
    assert run.data.params["model_run_id"] == fake["run_id"] and run.data.params["k"] == "3"
    sample = mlflow.artifacts.load_text(run.info.artifact_uri + "/sample.csv").splitlines()
    assert sample[0] == "userId,rank,movieId,score,title,genres" and len(sample) == 1 + 24

    again = jobs.recommend(model_uri=f"runs:/{fake['run_id']}/recommender", output=out, k=3, split_dir="")
    assert again["counts"] == manifest["counts"]  # same model, k, users, split: reused
    with pytest.raises(RecsysError, match="holds recommendations made with"):
        jobs.recommend(model_uri=fake["run_id"], output=out, k=4, split_dir="")


@pytest.mark.slow
def test_recommend_job_users_file_gives_unknown_users_the_most_rated(spark, tracking_uri, fake_recommender,
                                                                   tmp_path):
    from recsys import jobs

    fake = fake_recommender
    users_file = tmp_path / "users.txt"
    users_file.write_text("2\n99\n")
    out = str(tmp_path / "recs")
    manifest = jobs.recommend(model_uri=fake["run_id"], users=str(users_file), output=out, k=2, split_dir="")
    got = _rows(spark.read.parquet(out))
    counts = {}
    for _, m in fake["train"]:
        counts[m] = counts.get(m, 0) + 1
    most = sorted(counts.items(), key=lambda mc: (-mc[1], mc[0]))[:2]
    assert got[99] == [(m, float(c)) for m, c in most]
    assert set(got) == {2, 99} and manifest["counts"]["unknown_users"] == 1


def test_recommend_job_refuses_unknown_models_and_other_splits(spark, tracking_uri, fake_recommender,
                                                                tmp_path):
    from recsys import jobs
    from recsys.data import SplitConfig, make_split

    with pytest.raises(RecsysError, match="recsys-nope"):
        jobs.recommend(model_uri="models:/recsys-nope@champion", output=str(tmp_path / "a"))
    with pytest.raises(RecsysError, match="0123456789abcdef0123456789abcdef"):
        jobs.recommend(model_uri="0123456789abcdef0123456789abcdef", output=str(tmp_path / "a"))
    other = str(tmp_path / "other-split")
    make_split(spark, spark.createDataFrame([(1, 10, 4.0, 1), (2, 11, 3.0, 2)],
                                            "userId int, movieId int, rating double, timestamp long"),
               SplitConfig(), other, source="other", source_checksum="other-1", progress=lambda _m: None)
    with pytest.raises(RecsysError, match="is not the split the model was trained on"):
        jobs.recommend(model_uri=fake_recommender["run_id"], output=str(tmp_path / "b"), split_dir=other)
