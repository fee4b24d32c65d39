"""The exact top-k kernel (recsys.twins.allpairs) against a dense brute force, on sets with many
exact ties and near-ties at the k-th value."""

import numpy as np
import pytest

from recsys.twins import allpairs as ap


def brute_force(user_ids, offsets, tokens, k):
    """Every pair with common >= 1, ordered by (J desc, userA asc, userB asc); the first k."""
    n = len(user_ids)
    ids = np.unique(tokens)
    X = np.zeros((n, ids.size), dtype=np.int64)
    rows = np.repeat(np.arange(n), np.diff(offsets))
    X[rows, np.searchsorted(ids, tokens)] = 1
    C = X @ X.T
    s = X.sum(1)
    i, j = np.nonzero(np.triu(C, 1))
    c = C[i, j]
    a, b = np.minimum(user_ids[i], user_ids[j]), np.maximum(user_ids[i], user_ids[j])
    sa = np.where(user_ids[i] == a, s[i], s[j])
    sb = s[i] + s[j] - sa
    jac = c / (s[i] + s[j] - c)
    o = np.lexsort((b, a, -jac))[:k]
    return {"userA": a[o], "userB": b[o], "size_a": sa[o], "size_b": sb[o], "common": c[o],
            "jaccard": jac[o]}


def make_sets(rng, n, vocab, lo, hi, n_dups=0, equal_size=None):
    sets = []
    for _ in range(n):
        s = equal_size if equal_size else int(rng.integers(lo, hi + 1))
        p = 1.0 / (np.arange(vocab) + 3.0) ** 1.2
        sets.append(np.sort(rng.choice(vocab, size=min(s, vocab), replace=False, p=p / p.sum())))
    for _ in range(n_dups):  # identical users (J = 1) and near copies
        src = sets[int(rng.integers(len(sets)))].copy()
        if rng.random() < 0.5 and src.size > 1:
            src = src[1:]
        sets.append(src)
    order = rng.permutation(len(sets))
    sets = [sets[q] for q in order]
    user_ids = rng.choice(10 * len(sets) + 7, size=len(sets), replace=False).astype(np.int64)
    offsets = np.zeros(len(sets) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([s.size for s in sets])
    tokens = (np.concatenate(sets) * 7 + 3).astype(np.int32)  # raw ids: sparse, not 0..M-1
    return user_ids, offsets, tokens


def assert_same(got, want):
    for f in ap.RESULT_FIELDS:
        if f == "jaccard":
            np.testing.assert_array_equal(got[f], want[f])
        else:
            np.testing.assert_array_equal(np.asarray(got[f], dtype=np.int64), want[f].astype(np.int64),
                                          err_msg=f)


CASES = [  # (n, vocab, lo, hi, dups, equal_size)
    (60, 12, 2, 5, 5, None),       # tiny vocabulary: huge numbers of exact ties
    (120, 30, 3, 8, 10, None),
    (150, 40, 4, 4, 0, 4),         # all sets of equal size
    (200, 200, 5, 30, 15, None),
    (300, 500, 20, 60, 20, None),  # MovieLens-like sizes
]


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("k", [1, 7, 50, 100])
@pytest.mark.parametrize("n_tasks", [1, 2, 3])
@pytest.mark.parametrize("sample_size", [0, 16])
def test_matches_brute_force(case, k, n_tasks, sample_size):
    n, vocab, lo, hi, dups, eq = CASES[case]
    rng = np.random.default_rng(1000 * case + k)
    data = make_sets(rng, n, vocab, lo, hi, dups, eq)
    got, results = ap.top_k_exact(*data, k=k, n_tasks=n_tasks, sample_size=sample_size)
    assert_same(got, brute_force(*data, k))
    for r in results:  # each task's list is itself sorted and of distinct pairs
        assert len(set(zip(r.pairs["userA"], r.pairs["userB"], strict=True))) == len(r.pairs["userA"])
        assert np.all(r.pairs["userA"] < r.pairs["userB"])


def test_separate_tasks_merge_like_separate_workers():
    rng = np.random.default_rng(7)
    data = make_sets(rng, 250, 60, 3, 10, 12)
    want = brute_force(*data, 40)
    for n_tasks in (1, 2, 3):
        parts = [ap.task_top_k(*data, k=40, n_tasks=n_tasks, task=t, sample_size=20) for t in range(n_tasks)]
        assert_same(ap.merge_top(parts, 40), want)
        assert_same(ap.merge_top([p.pairs for p in reversed(parts)], 40), want)


def test_fewer_overlapping_pairs_than_k():
    # disjoint blocks: only pairs inside a block overlap
    sets = [[0, 1], [1, 2], [10, 11], [11, 12, 13], [20], [30, 31]]
    offsets = np.zeros(len(sets) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(s) for s in sets])
    data = (np.arange(len(sets), dtype=np.int64) + 100, offsets,
            np.concatenate([np.array(s) for s in sets]).astype(np.int32))
    for n_tasks in (1, 2, 3):
        got, _ = ap.top_k_exact(*data, k=100, n_tasks=n_tasks, sample_size=2)
        pairs = list(zip(got["userA"], got["userB"], got["common"], strict=True))
        assert pairs == [(100, 101, 1), (102, 103, 1)]
        assert_same(got, brute_force(*data, 100))


def test_k_larger_than_number_of_pairs_returns_every_overlapping_pair():
    rng = np.random.default_rng(3)
    data = make_sets(rng, 25, 40, 2, 6, 3)
    want = brute_force(*data, 10 ** 6)
    assert want["userA"].size < 28 * 27 // 2  # some pairs share nothing
    for n_tasks in (1, 2, 3):
        got, _ = ap.top_k_exact(*data, k=10 ** 4, n_tasks=n_tasks, sample_size=5)
        assert_same(got, want)
        assert np.all(got["common"] >= 1)


def test_identical_users_have_jaccard_one_ordered_by_ids():
    base = np.array([5, 9, 11, 40], dtype=np.int32)
    sets = [base, base, np.array([1, 2, 3], dtype=np.int32), base, np.array([1, 2, 3], dtype=np.int32)]
    offsets = np.zeros(6, dtype=np.int64)
    offsets[1:] = np.cumsum([s.size for s in sets])
    uids = np.array([30, 10, 7, 20, 3], dtype=np.int64)
    got, _ = ap.top_k_exact(uids, offsets, np.concatenate(sets), k=4, n_tasks=2, sample_size=1)
    assert list(zip(got["userA"], got["userB"], strict=True)) == [(3, 7), (10, 20), (10, 30), (20, 30)]
    assert np.all(got["jaccard"] == 1.0)


def test_input_validation():
    with pytest.raises(ValueError):
        ap.top_k_exact(np.array([1, 2]), np.array([0, 2, 4]), np.array([1, 1, 2, 3], dtype=np.int32), k=3)
    with pytest.raises(ValueError):
        ap.top_k_exact(np.array([1, 1]), np.array([0, 1, 2]), np.array([1, 2], dtype=np.int32), k=3)


def test_sample_is_deterministic_and_sized():
    ids = np.arange(1000, dtype=np.int64) * 13
    m1 = ap.sample_users(ids, 50)
    m2 = ap.sample_users(ids[::-1].copy(), 50)[::-1]
    assert m1.sum() == 50 and np.array_equal(m1, m2)
