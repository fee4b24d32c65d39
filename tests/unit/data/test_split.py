"""Split strategies: properties on synthetic data with known answers, and the directory contract."""

from __future__ import annotations

import json
import os

import pytest
from pyspark.sql import functions as F

from recsys.core import RecsysError
from recsys.data import SplitConfig, assign_parts, content_digest, load_split, make_split


def _parts(ratings, **kw):
    assigned = assign_parts(ratings, SplitConfig(**kw)).cache()
    return {p: assigned.where(F.col("part") == p).drop("part") for p in ("train", "validation", "test")}


@pytest.mark.parametrize("strategy", ["random", pytest.param("user", marks=pytest.mark.slow),
                                      pytest.param("temporal", marks=pytest.mark.slow)])
def test_partition_is_exact_and_sized(synthetic_ratings, strategy):
    parts = _parts(synthetic_ratings, strategy=strategy, fractions=(0.7, 0.15, 0.15), seed=3)
    total = synthetic_ratings.count()
    sizes = {p: df.count() for p, df in parts.items()}
    assert sum(sizes.values()) == total
    # union equals input (as a multiset) and parts do not overlap
    union = parts["train"].unionByName(parts["validation"]).unionByName(parts["test"])
    assert union.exceptAll(synthetic_ratings).count() == 0
    assert synthetic_ratings.exceptAll(union).count() == 0
    keys = union.groupBy("userId", "movieId").count()
    assert keys.where("count > 1").count() == 0
    # sizes within tolerance of the asked fractions
    assert sizes["train"] / total == pytest.approx(0.7, abs=0.04)
    assert sizes["validation"] / total == pytest.approx(0.15, abs=0.04)
    assert sizes["test"] / total == pytest.approx(0.15, abs=0.04)


@pytest.mark.parametrize("strategy", ["user", "temporal"])
def test_every_heldout_user_has_training_history(synthetic_ratings, strategy):
    parts = _parts(synthetic_ratings, strategy=strategy)
    train_users = parts["train"].select("userId").distinct()
    for name in ("validation", "test"):
        held = parts[name].select("userId").distinct()
        assert held.count() > 0
        assert held.join(train_users, "userId", "left_anti").count() == 0


def test_temporal_order(synthetic_ratings):
    parts = _parts(synthetic_ratings, strategy="temporal")
    last_train = parts["train"].groupBy("userId").agg(F.max("timestamp").alias("t_train"))
    first_val = parts["validation"].groupBy("userId").agg(F.min("timestamp").alias("t_val"),
                                                          F.max("timestamp").alias("t_val_max"))
    first_test = parts["test"].groupBy("userId").agg(F.min("timestamp").alias("t_test"))
    joined = last_train.join(first_val, "userId").join(first_test, "userId")
    assert joined.count() > 0
    assert joined.where("t_train >= t_val OR t_val_max >= t_test").count() == 0
    # also users with no validation rows: train before test
    j2 = last_train.join(first_test, "userId")
    assert j2.where("t_train >= t_test").count() == 0


def test_min_user_ratings_keeps_small_users_in_train(synthetic_ratings):
    parts = _parts(synthetic_ratings, strategy="random", min_user_ratings=20)
    counts = synthetic_ratings.groupBy("userId").count()
    small = counts.where("count < 20").select("userId")
    assert small.count() > 0
    for name in ("validation", "test"):
        assert parts[name].join(small, "userId").count() == 0


@pytest.mark.slow
def test_deterministic_regardless_of_partitioning(synthetic_ratings):
    a = _parts(synthetic_ratings, strategy="user", seed=11)
    b = _parts(synthetic_ratings.repartition(7, "movieId"), strategy="user", seed=11)
    c = _parts(synthetic_ratings, strategy="user", seed=12)
    for p in a:
        assert content_digest(a[p]) == content_digest(b[p])
    assert content_digest(a["test"]) != content_digest(c["test"])


@pytest.mark.parametrize("kw, fragment", [
    (dict(strategy="weird"), "allowed: random, user, temporal"),
    (dict(fractions=(0.8, 0.1, 0.2)), "must sum to 1"),
    (dict(fractions=(0.0, 0.5, 0.5)), "train > 0"),
    (dict(fractions=(0.8, -0.1, 0.3)), "each in [0, 1)"),
    (dict(min_user_ratings=-1), "min_user_ratings=-1"),
])
def test_config_errors(kw, fragment):
    with pytest.raises(RecsysError) as info:
        SplitConfig(**kw)
    assert fragment in str(info.value)


def test_directory_contract(spark, synthetic_ratings, tmp_path):
    out = str(tmp_path / "split")
    quiet = dict(source="synthetic", source_checksum="sha256:x", progress=lambda _m: None)
    manifest, reused = make_split(spark, synthetic_ratings, SplitConfig(seed=5), out, **quiet)
    assert not reused
    assert sorted(os.listdir(tmp_path)) == ["split"]  # no temporary sibling left behind
    assert sorted(os.listdir(out)) == ["manifest.json", "test", "train", "validation"]
    on_disk = json.loads((tmp_path / "split" / "manifest.json").read_text())
    assert on_disk["params"] == {"strategy": "random", "fractions": "0.8,0.1,0.1", "seed": 5,
                                 "min_user_ratings": 0}
    assert on_disk["input"]["rows"] == synthetic_ratings.count()
    assert sum(c["rows"] for c in on_disk["counts"].values()) == on_disk["input"]["rows"]
    assert [s["name"] for s in on_disk["schema"]] == ["userId", "movieId", "rating", "timestamp"]
    loaded = load_split(spark, out)
    assert loaded.test.count() == on_disk["counts"]["test"]["rows"]
    assert content_digest(loaded.test) == on_disk["digests"]["test"]

    # same parameters: reused, untouched
    mtime = os.path.getmtime(tmp_path / "split" / "manifest.json")
    again, reused = make_split(spark, synthetic_ratings, SplitConfig(seed=5), out, **quiet)
    assert reused and again["digests"] == manifest["digests"]
    assert os.path.getmtime(tmp_path / "split" / "manifest.json") == mtime

    # other parameters: refused without overwrite, replaced with it
    with pytest.raises(RecsysError, match="--overwrite"):
        make_split(spark, synthetic_ratings, SplitConfig(seed=6), out, **quiet)
    third, reused = make_split(spark, synthetic_ratings, SplitConfig(seed=6), out, overwrite=True, **quiet)
    assert not reused and third["params"]["seed"] == 6
    assert sorted(os.listdir(tmp_path)) == ["split"]


def test_incomplete_directory_is_not_a_split(spark, tmp_path):
    (tmp_path / "half" / "train").mkdir(parents=True)
    with pytest.raises(RecsysError, match="no manifest.json"):
        load_split(spark, str(tmp_path / "half"))
