"""The servable recommender: recsys.factors exports the arrays, recsys.serving serves them.

Known answers come from the Spark side on tiny data: a brute-force NumPy top-K over the
collected ``recommender.factors()``, ``ALSRecommender.predict`` and the existing Spark serving
model (the logged ``model`` artifact). Fitting and logging happen once per module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.core.constants import ITEM_COL, USER_COL

COLD_USER, UNKNOWN_MOVIE = 10_000, 10_000
ROOT = Path(__file__).resolve().parents[3]


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny(spark, tmp_path_factory):
    """Tiny MovieLens (60 users x 16 of 40 movies) and the models fitted on all of it."""
    from recsys.data import load_movielens
    from recsys.models import ALSConfig, ALSRecommender, BiasBaseline, PopularityRecommender
    from tests.support.tiny_movielens import write_tiny_movielens

    data = write_tiny_movielens(tmp_path_factory.mktemp("tiny"))
    ml = load_movielens(spark, data, progress=lambda _m: None)
    train = ml.ratings.cache()
    bias = BiasBaseline().fit(train)
    return {
        "train": train, "movies": ml.movies, "bias": bias,
        "implicit": ALSRecommender(ALSConfig(rank=3, max_iter=2, implicit_prefs=True)).fit(train),
        "explicit": ALSRecommender(ALSConfig(rank=3, max_iter=2), baseline=bias).fit(train),
        "popularity": PopularityRecommender().fit(train),
        "seen": {(r[0], r[1]) for r in train.select(USER_COL, ITEM_COL).collect()},
    }


@pytest.fixture(scope="module")
def logged(tiny, tmp_path_factory, _isolated_cache):
    """Both kinds logged with ``log_recommender_model`` in one run (the rating one carrying the
    Spark model logged by ``log_als_model``), downloaded, and loaded in-process."""
    import mlflow

    from recsys.mlops import log_als_model, log_recommender_model

    tmp = tmp_path_factory.mktemp("serving-run")
    mlflow.set_tracking_uri(_isolated_cache)  # the session's store, whatever an earlier test left set
    client = mlflow.MlflowClient(_isolated_cache)
    experiment = client.create_experiment(f"serving-{tmp.name}", artifact_location=str(tmp / "artifacts"))
    timings = {}
    with mlflow.start_run(experiment_id=experiment) as run:
        log_als_model(tiny["explicit"], tiny["bias"], validate=False)
        spark_dir = mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/model",
                                                        dst_path=str(tmp / "sp"))
        start = time.time()
        rating = log_recommender_model(tiny["explicit"], tiny["train"], kind="rating",
                                       popularity=tiny["popularity"], movies=tiny["movies"],
                                       fallback=tiny["bias"], spark_model_dir=spark_dir,
                                       meta={"split_digest": "abc123", "feedback": "explicit"})
        timings["log_rating"] = time.time() - start
        ranking = log_recommender_model(tiny["implicit"], tiny["train"], kind="ranking",
                                        popularity=tiny["popularity"], movies=tiny["movies"], name="ranker")
    out = {"run_id": run.info.run_id, "timings": timings}
    for kind, info in (("rating", rating), ("ranking", ranking)):
        local = mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp / kind))
        start = time.time()
        out[kind] = {"uri": info.model_uri, "dir": local, "model": mlflow.pyfunc.load_model(local)}
        timings[f"load_{kind}"] = time.time() - start
    return out


def _factors(recommender):
    users, items = recommender.factors()
    u = {r["id"]: np.asarray(r["features"], dtype=np.float64) for r in users.collect()}
    v = {r["id"]: np.asarray(r["features"], dtype=np.float64) for r in items.collect()}
    return u, v


def _brute_force(recommender, seen, k: int) -> dict:
    """Per user: [(movieId, raw score)] of the k best unseen movies, score desc then movieId asc."""
    u, v = _factors(recommender)
    out = {}
    for user, p in u.items():
        scored = [(-float(p @ q), movie) for movie, q in v.items() if (user, movie) not in seen]
        out[user] = [(movie, -neg) for neg, movie in sorted(scored)[:k]]
    return out


def _invalid(excinfo) -> str:
    assert excinfo.value.error_code == "INVALID_PARAMETER_VALUE"
    return excinfo.value.message


# ---------------------------------------------------------------- export


def test_export_writes_the_documented_layout(tiny, logged):
    root = Path(logged["rating"]["dir"]) / "artifacts" / "factors"
    meta = json.loads((root / "meta.json").read_text())
    arrays = {name: np.load(root / name, allow_pickle=False)
              for name in meta["files"] if name.endswith(".npy")}
    assert sorted(p.name for p in root.iterdir()) == sorted([*meta["files"], "meta.json"])
    assert sorted(arrays) == sorted(
        ["user_ids.npy", "user_factors.npy", "item_ids.npy", "item_factors.npy", "seen_indptr.npy",
         "seen_indices.npy", "popular_ids.npy", "popular_scores.npy", "bias_user_ids.npy", "bias_user.npy",
         "bias_item_ids.npy", "bias_item.npy"])
    assert (meta["format"], meta["kind"], meta["feedback"], meta["rank"]) == (1, "rating", "explicit", 5)
    assert (meta["n_users"], meta["n_movies"], meta["n_seen_pairs"], meta["n_popular"]) == (60, 40, 960, 40)
    assert meta["split_digest"] == "abc123" and meta["als_config"]["rank"] == 3  # rank 3 + 2 folded biases
    assert meta["global_mean"] == pytest.approx(tiny["bias"].global_mean, abs=1e-12)
    assert arrays["user_factors.npy"].dtype == np.float32 and arrays["user_factors.npy"].shape == (60, 5)
    assert arrays["user_ids.npy"].dtype == np.int32 and list(arrays["user_ids.npy"]) == list(range(1, 61))
    assert list(arrays["item_ids.npy"]) == list(range(1, 41))
    # the CSR is exactly the training pairs
    indptr, indices, items = arrays["seen_indptr.npy"], arrays["seen_indices.npy"], arrays["item_ids.npy"]
    assert indptr.dtype == np.int64 and indices.dtype == np.int32 and indptr[-1] == 960
    pairs = {(int(user), int(items[j])) for i, user in enumerate(arrays["user_ids.npy"])
             for j in indices[indptr[i]:indptr[i + 1]]}
    assert pairs == tiny["seen"]
    # the factors are the Spark model's, row for row
    u, v = _factors(tiny["explicit"])
    assert np.array_equal(arrays["user_factors.npy"][7], u[8].astype(np.float32))
    assert np.array_equal(arrays["item_factors.npy"][0], v[1].astype(np.float32))
    titles = json.loads((root / "titles.json").read_text())
    assert titles["movieId"][:2] == [1, 2] and titles["title"][:2] == ["Movie 1 (2000)", "Movie 2 (2000)"]
    top = tiny["popularity"].ranking(3).orderBy("rank").collect()
    assert list(arrays["popular_ids.npy"][:3]) == [r[ITEM_COL] for r in top]
    assert list(arrays["popular_scores.npy"][:3]) == [r["score"] for r in top]


def test_export_refuses_bad_arguments_before_any_work(tiny, tmp_path):
    from recsys.core import RecsysError
    from recsys.recommend import export_factors

    args, pop = (tiny["implicit"], tiny["train"]), tiny["popularity"]
    cases = [
        (dict(kind="stars", popularity=pop), "kind='stars' is unknown; allowed: ranking, rating"),
        (dict(kind="rating", popularity=pop, fallback=tiny["bias"]), "needs an explicit"),
        (dict(kind="ranking", popularity=None), "popularity must be a fitted PopularityRecommender"),
        (dict(kind="ranking", popularity=pop, meta={"kind": "x"}), "meta keys ['kind'] are reserved"),
        (dict(kind="ranking", popularity=pop, meta={"feedback": "explicit", "rank": 2}),
         "meta keys ['feedback', 'rank'] are reserved"),
        (dict(kind="ranking", popularity=pop, movies=tiny["train"]), "movies must have columns"),
    ]
    for kwargs, message in cases:
        with pytest.raises(RecsysError, match=__import__("re").escape(message)):
            export_factors(*args, tmp_path / "out", **kwargs)
    with pytest.raises(RecsysError, match="kind='rating' needs fallback"):
        export_factors(tiny["explicit"], tiny["train"], tmp_path / "out", kind="rating",
                       popularity=tiny["popularity"])
    (tmp_path / "taken").mkdir()
    with pytest.raises(RecsysError, match="already exists"):
        export_factors(*args, tmp_path / "taken", kind="ranking", popularity=tiny["popularity"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_a_failed_export_leaves_no_directory(tiny, tmp_path, monkeypatch):
    from recsys.recommend import factors

    def broken(*_a, **_k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(factors, "_collect_seen", broken)  # after the factors are written
    with pytest.raises(RuntimeError, match="disk full"):  # (meta may repeat kind and feedback)
        factors.export_factors(tiny["implicit"], tiny["train"], tmp_path / "out", kind="ranking",
                               popularity=tiny["popularity"],
                               meta={"kind": "ranking", "feedback": "implicit", "split_dir": "s"})
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- top-K lists


def test_top_k_equals_brute_force_numpy_over_the_spark_factors(tiny, logged):
    model = logged["ranking"]["model"]
    expected = _brute_force(tiny["implicit"], tiny["seen"], 5)
    got = model.predict(pd.DataFrame({USER_COL: list(range(1, 61))}), params={"k": 5})
    assert list(got.columns) == ["userId", "rank", "movieId", "title", "score", "source"]
    assert len(got) == 60 * 5 and set(got["source"]) == {"model"}
    for user, rows in got.groupby(USER_COL, sort=False):
        assert list(rows["movieId"]) == [m for m, _ in expected[user]], user
        assert np.allclose(rows["score"], [s for _, s in expected[user]], atol=1e-5, rtol=0)
        assert list(rows["rank"]) == [1, 2, 3, 4, 5]
        assert list(rows["title"]) == [f"Movie {m} (2000)" for m in rows["movieId"]]


def test_rating_lists_rank_by_the_raw_rating_and_report_it_clipped(tiny, logged):
    model = logged["rating"]["model"]
    expected = _brute_force(tiny["explicit"], tiny["seen"], 24)
    got = model.predict(pd.DataFrame({USER_COL: [2, 3, 60]}), params={"k": 24})
    for user, rows in got.groupby(USER_COL, sort=False):
        assert list(rows["movieId"]) == [m for m, _ in expected[user]]
        assert np.allclose(rows["score"], np.clip([s for _, s in expected[user]], 0.5, 5.0), atol=1e-5)
    raw = max(s for rows in expected.values() for _, s in rows)
    assert got["score"].between(0.5, 5.0).all() and raw > got["score"].min()


def test_top_k_excludes_seen_movies_and_the_order_is_stable(tiny, logged):
    model = logged["ranking"]["model"]
    frame = pd.DataFrame({USER_COL: list(range(60, 0, -1))})
    got = model.predict(frame, params={"k": 1000})
    # 40 movies, 16 rated each: exactly the 24 unseen come back, none seen
    assert (got.groupby(USER_COL).size() == 24).all()
    assert not {(u, m) for u, m in zip(got[USER_COL], got[ITEM_COL], strict=True)} & tiny["seen"]
    assert list(dict.fromkeys(got[USER_COL])) == list(range(60, 0, -1))  # users in input order
    for _, rows in got.groupby(USER_COL):
        keys = list(zip(-rows["score"], rows["movieId"], strict=True))
        assert keys == sorted(keys)
    again = model.predict(frame, params={"k": 1000})
    pd.testing.assert_frame_equal(got, again)


def test_k_comes_from_a_column_per_row_or_from_the_param(logged):
    model = logged["ranking"]["model"]
    by_column = model.predict(pd.DataFrame({USER_COL: [1, 2, COLD_USER], "k": [1, 3, 2]}))
    assert list(by_column.groupby(USER_COL, sort=False).size()) == [1, 3, 2]
    assert len(model.predict(pd.DataFrame({USER_COL: [1]}))) == 10  # the default
    assert len(model.predict(pd.DataFrame({USER_COL: [1, 1]}), params={"k": 2})) == 4


def test_a_cold_start_user_gets_the_popularity_list(tiny, logged):
    model = logged["rating"]["model"]
    got = model.predict(pd.DataFrame({USER_COL: [COLD_USER, 5]}), params={"k": 4})
    cold, known = got[got[USER_COL] == COLD_USER], got[got[USER_COL] == 5]
    top = tiny["popularity"].ranking(4).orderBy("rank").collect()
    assert list(cold["movieId"]) == [r[ITEM_COL] for r in top]
    assert list(cold["score"]) == [r["score"] for r in top]  # training rating counts
    assert set(cold["source"]) == {"popularity"} and set(known["source"]) == {"model"}
    assert list(cold["rank"]) == [1, 2, 3, 4]


def test_top_positions_breaks_ties_by_position_exactly():
    from recsys.recommend.serving import top_positions  # the served pyfunc: a module alone

    scores = np.array([1.0, 3.0, 3.0, 2.0, 3.0, -np.inf, 3.0])
    assert list(top_positions(scores.copy(), 2)) == [1, 2]
    assert list(top_positions(scores.copy(), 5)) == [1, 2, 4, 6, 3]
    assert list(top_positions(scores.copy(), 6)) == [1, 2, 4, 6, 3, 0]
    rng = np.random.default_rng(3)
    for _ in range(200):  # many ties: against a full sort by (-score, position)
        n = int(rng.integers(1, 60))
        values = rng.integers(0, 5, n).astype(np.float32)
        k = int(rng.integers(1, n + 1))
        reference = sorted(range(n), key=lambda i: (-values[i], i))[:k]
        assert list(top_positions(values, k)) == reference


# ---------------------------------------------------------------- pair scores


def _pairs():
    users = [1, 1, 2, 7, COLD_USER, 3, COLD_USER, 60]
    movies = [1, 2, 40, UNKNOWN_MOVIE, 5, 3, UNKNOWN_MOVIE, 21]
    return pd.DataFrame({USER_COL: users, ITEM_COL: movies})


@pytest.mark.slow
def test_pair_scores_equal_the_spark_serving_model_and_predict(spark, tiny, logged, tmp_path):
    import mlflow
    from pyspark.ml import PipelineModel

    pairs = _pairs()
    frame = spark.createDataFrame(pairs)
    for kind, recommender in (("rating", tiny["explicit"]), ("ranking", tiny["implicit"])):
        got = logged[kind]["model"].predict(pairs)
        assert list(got.columns) == ["userId", "movieId", "score"]
        assert list(got[ITEM_COL]) == list(pairs[ITEM_COL]) and not got["score"].isna().any()
        recommender.write_serving_model(str(tmp_path / kind), tiny["bias"] if kind == "rating" else None)
        spark_model = PipelineModel.load(str(tmp_path / kind))
        expected = [r["prediction"] for r in spark_model.transform(frame).collect()]
        assert np.allclose(got["score"], expected, atol=1e-5, rtol=0), kind
        # ALS's joins shuffle the rows: match its predictions to the pairs by key, not position
        by_pair = {(r[USER_COL], r[ITEM_COL]): r["prediction"] for r in recommender.predict(frame).collect()}
        predicted = [by_pair[(u, i)] for u, i in zip(pairs[USER_COL], pairs[ITEM_COL], strict=True)]
        known = [p is not None for p in predicted]
        assert known == [True, True, True, False, False, True, False, True]
        assert np.allclose(got["score"][known], [p for p in predicted if p is not None], atol=1e-5, rtol=0)
    # unknown pairs: 0.0 for a ranking model; the bias baseline (clipped) for a rating model
    assert list(logged["ranking"]["model"].predict(pairs)["score"][[3, 4, 6]]) == [0.0, 0.0, 0.0]
    mu = tiny["bias"].global_mean
    assert logged["rating"]["model"].predict(pairs)["score"][6] == pytest.approx(mu, abs=1e-12)
    # the registered version keeps the Spark ALS model, which scores the same pairs
    stored = mlflow.spark.load_model(os.path.join(logged["rating"]["dir"], "artifacts", "spark_model"))
    from_stored = [r["prediction"] for r in stored.transform(frame).collect()]
    assert np.allclose(logged["rating"]["model"].predict(pairs)["score"], from_stored, atol=1e-5, rtol=0)


def test_the_run_names_the_model_recommender(logged):
    import mlflow

    model = mlflow.pyfunc.load_model(f"runs:/{logged['run_id']}/recommender")
    meta = model.metadata
    assert meta.metadata["recsys_kind"] == "rating" and "userId" in meta.metadata["recsys_inputs"]
    assert [p.name for p in meta.get_params_schema().params] == ["k"]
    assert meta.get_params_schema().params[0].default == 10
    assert meta.get_input_schema() is None  # on purpose: see recsys/serving.py
    assert meta.get_output_schema().input_names() == ["userId", "rank", "movieId", "title", "score", "source"]


# ---------------------------------------------------------------- bad input

BAD = [
    (pd.DataFrame({"user_id": [1]}), None, "unknown column(s) ['user_id']; allowed: userId, movieId, k"),
    (pd.DataFrame({USER_COL: [1], "foo": [2]}), None, "unknown column(s) ['foo']"),
    (pd.DataFrame({ITEM_COL: [1]}), None, "missing column userId"),
    (pd.DataFrame({USER_COL: ["abc"]}), None, "userId must be integers; row 0 is 'abc'"),
    (pd.DataFrame({USER_COL: [1.0, 1.5]}), None, "userId must be integers; row 1 is 1.5"),
    (pd.DataFrame({USER_COL: [1, None]}), None, "userId must be integers; row 1 is null"),
    (pd.DataFrame({USER_COL: [1], ITEM_COL: ["x"]}), None, "movieId must be integers; row 0 is 'x'"),
    (pd.DataFrame({USER_COL: [1, 2], "k": [5, 0]}), None, "k must be an integer in 1..1000; row 1 is 0"),
    (pd.DataFrame({USER_COL: [1], "k": [1001]}), None, "k must be an integer in 1..1000; row 0 is 1001"),
    (pd.DataFrame({USER_COL: [1], "k": ["x"]}), None, "k must be integers; row 0 is 'x'"),
    (pd.DataFrame({USER_COL: [1]}), {"k": 0}, "k must be an integer in 1..1000; got 0"),
    (pd.DataFrame({USER_COL: [1]}), {"k": 1001}, "k must be an integer in 1..1000; got 1001"),
    (pd.DataFrame({USER_COL: [1]}), {"k": "x"}, "'k'"),  # MLflow's param check names it
    (pd.DataFrame({USER_COL: pd.Series([], dtype="int64")}), None, "the input is empty"),
    (pd.DataFrame({USER_COL: [1], ITEM_COL: [2], "k": [3]}), None, "k applies to lists"),
]


@pytest.mark.parametrize("frame, params, message", BAD, ids=[m[:30] for _, _, m in BAD])
def test_bad_input_raises_invalid_parameter_value_naming_the_problem(logged, frame, params, message):
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException) as excinfo:
        logged["ranking"]["model"].predict(frame, params=params)
    assert message in _invalid(excinfo)


# ---------------------------------------------------------------- no JVM, no pyspark

_NO_SPARK = textwrap.dedent("""
    import importlib.abc, json, sys, time
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "pyspark" or name.startswith("pyspark."):
                raise ImportError("pyspark is blocked in this test")
    if sys.argv[2] == "block":
        sys.meta_path.insert(0, Block())
    import mlflow.pyfunc, pandas as pd
    start = time.time()
    model = mlflow.pyfunc.load_model(sys.argv[1])
    loaded = time.time() - start
    lists = model.predict(pd.DataFrame({"userId": [1, 10000]}), params={"k": 3})
    pairs = model.predict(pd.DataFrame({"userId": [1, 10000], "movieId": [2, 3]}))
    jvm = False
    if "pyspark" in sys.modules:
        from pyspark import SparkContext
        jvm = SparkContext._gateway is not None or SparkContext._active_spark_context is not None
    print(json.dumps({"pyspark": "pyspark" in sys.modules, "jvm": jvm, "load_seconds": loaded,
                      "lists": lists["movieId"].tolist(), "pairs": pairs["score"].tolist()}))
""")


@pytest.mark.slow
def test_loading_and_predicting_start_no_jvm_and_need_no_pyspark(logged, tmp_path):
    script = tmp_path / "load.py"
    script.write_text(_NO_SPARK)
    model = logged["rating"]["model"]
    lists = model.predict(pd.DataFrame({USER_COL: [1, COLD_USER]}), params={"k": 3})
    pairs = model.predict(pd.DataFrame({USER_COL: [1, COLD_USER], ITEM_COL: [2, 3]}))
    expected_lists, expected_pairs = lists["movieId"].tolist(), pairs["score"].tolist()
    for mode in ("block", "allow"):
        done = subprocess.run([sys.executable, str(script), logged["rating"]["dir"], mode],
                              capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result["jvm"] is False
        if mode == "block":  # a serving environment without pyspark works, and never imports it
            assert result["pyspark"] is False
        assert result["lists"] == expected_lists and result["pairs"] == expected_pairs
        assert result["load_seconds"] < 30


# ---------------------------------------------------------------- a real server


def _post(url: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, json.loads(resp.read().decode())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read().decode())


SERVER_BAD = [
    ({"dataframe_split": {"columns": ["user_id"], "data": [[1]]}}, "unknown column(s) ['user_id']"),
    ({"dataframe_records": [{"userId": 1, "foo": 2}]}, "unknown column(s) ['foo']"),
    ({"dataframe_split": {"columns": ["movieId"], "data": [[1]]}}, "missing column userId"),
    ({"dataframe_split": {"columns": ["userId"], "data": [["abc"]]}},
     "userId must be integers; row 0 is 'abc'"),
    ({"dataframe_split": {"columns": ["userId"], "data": [[1.5]]}}, "userId must be integers; row 0 is 1.5"),
    ({"dataframe_records": [{"userId": 1}, {"userId": None}]}, "userId must be integers; row 1 is null"),
    ({"dataframe_split": {"columns": ["userId", "k"], "data": [[1, 0]]}}, "k must be an integer in 1..1000"),
    ({"dataframe_split": {"columns": ["userId"], "data": [[1]]}, "params": {"k": 1001}},
     "k must be an integer in 1..1000; got 1001"),
    ({"dataframe_split": {"columns": ["userId"], "data": [[1]]}, "params": {"k": "x"}}, "'k'"),
    ({"dataframe_split": {"columns": ["userId"], "data": []}}, "the input is empty"),
]


@pytest.mark.server
def test_served_model_answers_400_to_bad_payloads_and_keeps_serving(logged, tmp_path):
    from tests.support.services import _start, _stop, _wait, free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", logged["ranking"]["dir"],
           "--env-manager", "local", "-p", str(port), "-h", "127.0.0.1"]
    started = time.time()
    # the server runs `uvicorn` found on PATH: the interpreter's own bin folder first
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    proc = _start(cmd, log, env)
    try:
        _wait(lambda: urllib.request.urlopen(f"{url}/ping", timeout=2).status == 200, 180,
              "mlflow models serve", proc, log)
        ready = time.time() - started
        for payload, message in SERVER_BAD:
            status, body = _post(f"{url}/invocations", payload)
            assert status == 400, (payload, body)
            assert body["error_code"] in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST")
            assert message in body["message"], (payload, body["message"][-500:])
        status, body = _post(f"{url}/invocations", {"dataframe_split": {"columns": ["userId"],
                                                                         "data": [[1], [COLD_USER]]},
                                                     "params": {"k": 3}})
        assert status == 200, body
        got = pd.DataFrame(body["predictions"])
        expected = logged["ranking"]["model"].predict(pd.DataFrame({USER_COL: [1, COLD_USER]}),
                                                      params={"k": 3})
        assert got[["userId", "rank", "movieId", "source"]].values.tolist() == \
            expected[["userId", "rank", "movieId", "source"]].values.tolist()
        assert np.allclose(got["score"], expected["score"], atol=1e-9)
        status, body = _post(f"{url}/invocations", {"dataframe_records": [{"userId": 1, "movieId": 2}]})
        assert status == 200 and len(body["predictions"]) == 1
        print(f"server ready in {ready:.1f}s")
    finally:
        _stop(proc)
