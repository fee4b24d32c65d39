"""The contract every Recommender passes: fit, recommend K, nothing seen, save/reload identical.

Use from a model's tests::

    from tests.support.contract import assert_recommender_contract
    assert_recommender_contract(spark, lambda: MyModel(...), train, tmp_dir=tmp_path)

``train`` must be tiny (it is collected). Every movie in ``train`` must be scorable by the
fitted model for every user (true for popularity and ALS), so each user gets exactly
``min(k, movies in train - movies the user rated)`` recommendations.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict

from recsys.core.constants import ITEM_COL, PREDICTION_COL, USER_COL
from recsys.evaluation import recommend


def _rows(recs):
    return sorted((r[USER_COL], r["rank"], r[ITEM_COL], float(r["score"])) for r in recs.collect())


def assert_recommender_contract(spark, model_factory, train, *, k: int = 5, tmp_dir=None):
    """Assert the contract; returns the recommendations as sorted (user, rank, movie, score)."""
    model = model_factory()
    assert model.fit(train) is model, "fit must return self"

    users = train.select(USER_COL).distinct()
    recs = recommend(model, users, train, k)
    assert recs.columns == [USER_COL, ITEM_COL, "score", "rank"]
    rows = _rows(recs)

    seen = defaultdict(set)
    for r in train.select(USER_COL, ITEM_COL).collect():
        seen[r[0]].add(r[1])
    all_items = set().union(*seen.values())
    by_user = defaultdict(list)
    for user, rank, item, score in rows:
        by_user[user].append((rank, item, score))
    for user, items in seen.items():
        got = by_user.get(user, [])
        expected_n = min(k, len(all_items - items))
        assert len(got) == expected_n, f"user {user}: {len(got)} recommendations, expected {expected_n}"
        assert [r for r, _, _ in got] == list(range(1, expected_n + 1)), f"user {user}: ranks {got}"
        assert not ({i for _, i, _ in got} & items), f"user {user}: a seen movie was recommended"
        for (_, i1, s1), (_, i2, s2) in zip(got, got[1:], strict=False):
            assert s1 > s2 or (s1 == s2 and i1 < i2), f"user {user}: order {got}"

    # top_n honours n; predict keeps every row and adds a double prediction
    top = model.top_n(users, 2).groupBy(USER_COL).count().agg({"count": "max"}).first()[0]
    assert top <= 2
    pairs = train.select(USER_COL, ITEM_COL).limit(5)
    pred = model.predict(pairs)
    assert PREDICTION_COL in pred.columns and dict(pred.dtypes)[PREDICTION_COL] == "double"
    assert pred.count() == pairs.count()

    # save and reload: identical recommendations
    base = str(tmp_dir) if tmp_dir is not None else tempfile.mkdtemp(prefix="recsys-contract-")
    path = f"{base}/model-{model.name}"
    model.save(path)
    loaded = type(model).load(spark, path)
    assert loaded.predicts_ratings == model.predicts_ratings
    again = _rows(recommend(loaded, users, train, k))
    assert [r[:3] for r in again] == [r[:3] for r in rows]
    assert all(abs(a[3] - b[3]) < 1e-9 for a, b in zip(again, rows, strict=True))
    return rows
