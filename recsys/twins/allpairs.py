"""Exact top-k Jaccard self-join of user sets (AllPairs / PPJoin style), numpy + numba, no Spark:
the kernel each task of :func:`recsys.twins.exact.exact_top_pairs` runs.

Problem
-------
Users have SETS of movies. Return the ``k`` best distinct unordered pairs (userA < userB by user
id) with at least one movie in common, ordered by Jaccard ``J = c / (sa + sb - c)`` descending,
then userA ascending, then userB ascending (a total order, so "the top k" is unique).

Algorithm
---------
1. Re-index movies by ascending frequency (rarest first, ties by movie id); sort every set in that
   order. Rank users by (size, user id): rank ``r`` (sizes are monotone in rank). A pair is
   examined once, when probing its higher-ranked member ``x`` (only ``y`` with r(y) < r(x)).
2. Inverted index, CSR over movies: for each movie the entries (r(y), position j of the movie in
   y), sorted by rank. Built with an O(N) counting sort in numba; at floor ``f`` only the
   "index prefix" ``j < sy - ceil(2f/(1+f) sy) + 1`` of every set is indexed.
3. The threshold ``t`` is a rational ``tc/tu`` (the current k-th pair's common/union, or 0/1
   while fewer than k pairs are known). Every filter uses exact int64 arithmetic, so ties at the
   k-th value are never pruned by rounding. Probing ``x`` (size sx) at t:
   * required overlap of (x, y): ``alpha = max(1, ceil(tc (sx+sy) / (tc+tu)))``
     (``c/(sx+sy-c) >= t  <=>  c >= t (sx+sy)/(1+t)``);
   * size filter: ``sy >= ceil(tc sx / tu)`` -> a rank window found by binary search on sizes,
     then in each inverted list;
   * probe prefix: the first ``sx - ceil(t sx) + 1`` movies of x;
   * positional filter: candidate y keeps c (shared movies seen so far) and the last (i, j);
     meeting movie i of x at position j of y, if ``c + 1 + min(sx-i-1, sy-j-1) < alpha`` y is
     dropped for this probe (with c = 0 this is exactly PPJoin's per-pair prefix
     ``j < sy - alpha + 1``, which is shorter than the index prefix, so no extra check is needed);
   * verification: ``common = c + |x[i+1:] & y[j+1:]|`` by a merge of the two sorted tails,
     abandoned as soon as it can no longer reach alpha.
4. Top-k: a binary heap of k pairs whose root is the worst under the total order; once full,
   t = the root's Jaccard and it only rises. A candidate is dropped only if an UPPER bound of its
   Jaccard is STRICTLY below t.
5. Seeding (per worker): first probe a fixed, seeded-hash sample of ``sample_size`` users
   (the same in every worker) against a full index (t starts at 0). The heap's k-th value f0 is
   witnessed by k real pairs. Then build the index at f0 and probe the worker's own users
   (``rank % n_tasks == task``, minus the sample) in ascending rank, t rising from f0.
   Each worker returns its heap; :func:`merge_top` dedups (the sample pairs are found by every
   worker) and keeps the best k.

Exactness
---------
(a) Counting is exact. The global order is the same in every set, so shared movies appear in the
    same relative order in x and y. If y's last counted shared movie is at (i, j), every shared
    movie before it sits at i' < i, j' < j, i.e. inside x's probe prefix (i is) and inside y's
    indexed prefix (j is), and its index entry lies in the probed rank window (that window
    depends on y only). So it was met, and it was counted unless y had been dropped -- but a
    dropped y is never verified. Hence ``common = c + |x[i+1:] & y[j+1:]|``, and the positional
    bound ``c + 1 + min(remaining)`` is a true upper bound of the overlap.
(b) No pair with J >= t is filtered out. If J(x, y) >= t then common >= alpha and
    sy >= t sx. Its first shared movie is at positions p <= sx - alpha and q <= sy - alpha
    (at least alpha - 1 shared movies follow it); alpha >= ceil(t sx) puts p inside the probe
    prefix, and alpha >= ceil(2t/(1+t) sy) (as sx >= sy) puts q inside the index prefix built
    at any f <= t. The positional filter only drops y when the overlap bound is < alpha.
(c) One worker w sees D_w = pairs whose higher-ranked member is a sample user or a user of w
    (the sample pairs are examined in phase 1, the others in phase 2, each exactly once since the
    sample is skipped in phase 2). The heap always holds real distinct pairs of D_w, so at every
    moment t <= the k-th best Jaccard of D_w. A pair p in top-k(D_w) has J(p) >= that value
    >= t, so by (b) it is verified and offered; a heap keeps the top k of what it is offered;
    and top-k(D_w) is contained in the offered set O (a subset of D_w), so the heap ends as
    exactly top-k(D_w) (or all of O if |O| < k).
(d) Every pair with c >= 1 lies in some D_w (its higher-ranked member is sampled or owned by
    exactly one worker). A pair in the global top k is in the top k of any subset containing it,
    so it is in the list of the worker owning it; the merge (dedup, then best k under the total
    order) therefore returns exactly the global top k. (Equivalently: every worker's floor is
    witnessed by real distinct pairs, hence <= the true k-th value.)
Floats: ``jaccard`` is only computed for output. IEEE division is correctly rounded, so equal
rationals give equal doubles, and two different rationals with denominators <= 2**26 differ by
far more than one ulp, so sorting the doubles reproduces the exact order.

Cost model (per worker, N = entries, n = users, M = movies)
-------------------------------------------------------------
* preparation, O(N): movie frequencies (bincount), per-user sort (N log avg-size), gather by
  rank; index build O(N) twice (full index for the sample, then the prefix index at f0).
  Memory: the sorted copy of the data (4N bytes) + the full index (8N bytes, freed before the
  f0 index, ~8N * (1 - 2f0/(1+f0)) bytes) + O(n) scratch; ~0.4 GB at N = 33.8M.
* phase 1: sample_size probes against the full index (long lists of popular movies).
* phase 2: for each own x, sum over its probe-prefix movies of the list segment inside the
  size window. Rarest-first order makes prefixes rare, and t -> true k-th value quickly, so
  the work is a small multiple of the candidates that survive; verification is a merge of
  the two tails (<= sx + sy) per surviving candidate.
Every worker repeats the O(N) preparation; only the probing is split n_tasks ways.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np
from numba import njit

# --------------------------------------------------------------------------- small helpers


@njit(cache=True, nogil=True, inline="always")
def _ceil_div(a, b):
    """ceil(a / b) for int64 a >= 0, b > 0."""
    return (a + b - 1) // b


@njit(cache=True, nogil=True)
def _lower_bound(arr, lo, hi, value):
    """First index in [lo, hi) with arr[idx] >= value (arr sorted ascending there)."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if arr[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, nogil=True, inline="always")
def _alpha(tc, tu, sx, sy):
    """Minimum overlap for J >= tc/tu (and at least one shared movie)."""
    a = _ceil_div(tc * (sx + sy), tc + tu)
    return a if a > 1 else 1


# --------------------------------------------------------------------------- top-k heap
# Heap arrays: hc (common), hu (union), ha/hb (user ids, a < b), hsa/hsb (sizes), all int64.
# The root (index 0) is the WORST pair under (J desc, a asc, b asc).


@njit(cache=True, nogil=True, inline="always")
def _worse(c1, u1, a1, b1, c2, u2, a2, b2):
    """Pair 1 ranks after pair 2 in the total order (J desc, userA asc, userB asc)."""
    left, right = c1 * u2, c2 * u1
    if left != right:
        return left < right
    if a1 != a2:
        return a1 > a2
    return b1 > b2


@njit(cache=True, nogil=True)
def _sift_down(h, i, n):
    hc, hu, ha, hb = h[0], h[1], h[2], h[3]
    while True:
        lc, w = 2 * i + 1, i
        if lc < n and _worse(hc[lc], hu[lc], ha[lc], hb[lc], hc[w], hu[w], ha[w], hb[w]):
            w = lc
        if lc + 1 < n and _worse(hc[lc + 1], hu[lc + 1], ha[lc + 1], hb[lc + 1], hc[w], hu[w], ha[w], hb[w]):
            w = lc + 1
        if w == i:
            return
        for f in range(h.shape[0]):
            h[f, i], h[f, w] = h[f, w], h[f, i]
        i = w


@njit(cache=True, nogil=True)
def _sift_up(h, i):
    while i > 0:
        p = (i - 1) >> 1
        if not _worse(h[0, i], h[1, i], h[2, i], h[3, i], h[0, p], h[1, p], h[2, p], h[3, p]):
            return
        for f in range(h.shape[0]):
            h[f, i], h[f, p] = h[f, p], h[f, i]
        i = p


@njit(cache=True, nogil=True)
def _heap_offer(h, hn, k, c, u, a, b, sa, sb):
    """Offer a pair to the heap h (6 x k int64: c, u, a, b, sa, sb); return the new size."""
    if hn < k:
        h[0, hn], h[1, hn], h[2, hn], h[3, hn], h[4, hn], h[5, hn] = c, u, a, b, sa, sb
        _sift_up(h, hn)
        return hn + 1
    if _worse(c, u, a, b, h[0, 0], h[1, 0], h[2, 0], h[3, 0]):
        return hn
    h[0, 0], h[1, 0], h[2, 0], h[3, 0], h[4, 0], h[5, 0] = c, u, a, b, sa, sb
    _sift_down(h, 0, hn)
    return hn


@njit(cache=True, nogil=True, inline="always")
def _threshold(h, hn, k):
    """Current floor as a rational (tc, tu): the k-th pair's Jaccard, or 0/1."""
    if hn < k:
        return 0, 1
    return h[0, 0], h[1, 0]


# --------------------------------------------------------------------------- preparation


@njit(cache=True, nogil=True)
def _gather_sorted(offsets, tokens, order, new_offsets):
    """Rows of (offsets, tokens) taken in ``order``, each row sorted ascending."""
    out = np.empty(new_offsets[-1], dtype=np.int32)
    repeats = False
    for r in range(order.shape[0]):
        src = order[r]
        s, e, d = offsets[src], offsets[src + 1], new_offsets[r]
        out[d:d + e - s] = np.sort(tokens[s:e])
        for q in range(d + 1, d + e - s):
            repeats |= out[q] == out[q - 1]
    return out, repeats


@njit(cache=True, nogil=True)
def _build_index(off, tok, sizes, n_movies, tc, tu):
    """Inverted index at floor tc/tu: CSR over movies of (rank, position), ranks ascending.

    Only positions j < sy - ceil(2t/(1+t) sy) + 1 of each set y are indexed. Counting sort, O(N).
    """
    n = sizes.shape[0]
    plen = np.empty(n, dtype=np.int64)
    for y in range(n):
        sy = np.int64(sizes[y])
        p = sy - _ceil_div(2 * tc * sy, tc + tu) + 1
        plen[y] = min(sy, p)
    counts = np.zeros(n_movies + 1, dtype=np.int64)
    for y in range(n):
        for q in range(off[y], off[y] + plen[y]):
            counts[tok[q] + 1] += 1
    ioff = np.cumsum(counts)
    fill = ioff[:-1].copy()
    irank = np.empty(ioff[-1], dtype=np.int32)
    ipos = np.empty(ioff[-1], dtype=np.int32)
    for y in range(n):  # ascending rank -> every list ends up sorted by rank
        for j in range(plen[y]):
            z = tok[off[y] + j]
            irank[fill[z]] = y
            ipos[fill[z]] = j
            fill[z] += 1
    return ioff, irank, ipos


class Prepared(NamedTuple):
    """Users by rank (size, user id) with sets re-indexed rarest-first and sorted."""
    uids: np.ndarray      # int64[n] user id of rank r
    sizes: np.ndarray     # int32[n] set size of rank r (non-decreasing)
    off: np.ndarray       # int64[n+1]
    tok: np.ndarray       # int32[N] movie index (0 = rarest)
    n_movies: int


def _movie_order(tokens):
    """Map raw movie ids -> index by (frequency asc, id asc); returns the mapped tokens."""
    tokens = np.asarray(tokens)
    if tokens.size and tokens.min() >= 0 and tokens.max() < 4 * tokens.size + (1 << 20):
        freq = np.bincount(tokens)
        ids = np.flatnonzero(freq)
        new = np.empty(freq.size, dtype=np.int32)
        new[ids[np.lexsort((ids, freq[ids]))]] = np.arange(ids.size, dtype=np.int32)
        return new[tokens], ids.size
    ids, inv, freq = np.unique(tokens, return_inverse=True, return_counts=True)
    new = np.empty(ids.size, dtype=np.int32)
    new[np.lexsort((ids, freq))] = np.arange(ids.size, dtype=np.int32)
    return new[inv], ids.size


def prepare(user_ids, offsets, tokens) -> Prepared:
    """Re-index movies, rank users by (size, id), sort every set. Sets must not repeat movies."""
    user_ids = np.asarray(user_ids, dtype=np.int64)
    offsets = np.asarray(offsets, dtype=np.int64)
    sizes = np.diff(offsets)
    if np.any(sizes <= 0):
        raise ValueError("every user needs a non-empty set")
    if np.unique(user_ids).size != user_ids.size:
        raise ValueError("user ids must be distinct")
    mapped, n_movies = _movie_order(tokens)
    order = np.lexsort((user_ids, sizes))
    new_sizes = sizes[order]
    new_off = np.zeros(order.size + 1, dtype=np.int64)
    np.cumsum(new_sizes, out=new_off[1:])
    tok, repeats = _gather_sorted(offsets, mapped, order, new_off)
    if repeats:
        raise ValueError("a set repeats a movie")
    return Prepared(user_ids[order], new_sizes.astype(np.int32), new_off, tok, int(n_movies))


def sample_users(user_ids, sample_size: int, seed: int = 20240531) -> np.ndarray:
    """Boolean mask of a deterministic sample: the ``sample_size`` smallest seeded hashes of id."""
    x = np.asarray(user_ids, dtype=np.int64).view(np.uint64) ^ np.uint64(seed & 0xFFFFFFFFFFFFFFFF)
    with np.errstate(over="ignore"):  # splitmix64
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    mask = np.zeros(x.size, dtype=bool)
    if sample_size > 0:
        mask[np.lexsort((user_ids, x))[:sample_size]] = True
    return mask


# --------------------------------------------------------------------------- probing

# counters: 0 probes, 1 index entries scanned, 2 candidates touched, 3 candidates verified,
#           4 merges started, 5 pairs offered to the heap
N_COUNTERS = 6


@njit(cache=True, nogil=True)
def _tail_overlap(tok, q, qe, in_x, need):
    """How many of tok[q:qe] are marked in ``in_x``, or -1 once it can no longer reach ``need``.

    Verification only walks y's tail: x's movies are marked in a dense byte array over movies
    (the global order is shared, so a movie after y's last counted one is after x's too).
    """
    found = 0
    for p in range(q, qe):
        if found + (qe - p) < need:
            return -1
        found += in_x[tok[p]]
    return found if found >= need else -1


@njit(cache=True, nogil=True)
def _collect(x, P_off, P_tok, P_sizes, ioff, irank, ipos, tc, tu, cnt, li, lj, touched, ctr):
    """Candidate generation for x at t = tc/tu; returns how many ranks were touched."""
    sx = np.int64(P_sizes[x])
    xs = P_off[x]
    min_size = max(1, _ceil_div(tc * sx, tu))
    lo = _lower_bound(P_sizes, 0, x, min_size)
    if lo >= x:
        return 0
    px = min(sx, sx - _ceil_div(tc * sx, tu) + 1)
    nt = 0
    for i in range(px):
        z = P_tok[xs + i]
        s = _lower_bound(irank, ioff[z], ioff[z + 1], lo)
        e = _lower_bound(irank, s, ioff[z + 1], x)
        ctr[1] += e - s
        for p in range(s, e):
            y = irank[p]
            c = cnt[y]
            if c < 0:
                continue
            sy = np.int64(P_sizes[y])
            j = ipos[p]
            if c + 1 + min(sx - i - 1, sy - j - 1) < _alpha(tc, tu, sx, sy):
                if c > 0:
                    cnt[y] = -1
                continue
            if c == 0:
                touched[nt] = y
                nt += 1
            cnt[y] = c + 1
            li[y] = i
            lj[y] = j
    ctr[2] += nt
    return nt


@njit(cache=True, nogil=True)
def _verify(x, nt, P_uids, P_off, P_tok, P_sizes, cnt, li, lj, touched, in_x, h, hn, k, ctr):
    """Verify the touched candidates of x (resetting the scratch); returns the heap size."""
    sx = np.int64(P_sizes[x])
    xs = P_off[x]
    for q in range(xs, xs + sx):
        in_x[P_tok[q]] = 1
    for q in range(nt):
        y = touched[q]
        c = np.int64(cnt[y])
        cnt[y] = 0
        if c <= 0:
            continue
        tc, tu = _threshold(h, hn, k)
        sy = np.int64(P_sizes[y])
        need = _alpha(tc, tu, sx, sy)
        i, j = li[y] + 1, lj[y] + 1
        if c + min(sx - i, sy - j) < need:
            continue
        ctr[3] += 1
        if c >= need and (i == sx or j == sy):
            extra = 0
        else:
            ctr[4] += 1
            extra = _tail_overlap(P_tok, P_off[y] + j, P_off[y] + sy, in_x, need - c)
            if extra < 0:
                continue
        common = c + extra
        a, b = P_uids[x], P_uids[y]
        if a > b:
            a, b = b, a
        sa = sx if P_uids[x] == a else sy
        sb = sx + sy - sa
        ctr[5] += 1
        hn = _heap_offer(h, hn, k, common, sx + sy - common, a, b, sa, sb)
    for q in range(xs, xs + sx):
        in_x[P_tok[q]] = 0
    return hn


@njit(cache=True, nogil=True)
def _probe_all(xs_ranks, P_uids, P_off, P_tok, P_sizes, ioff, irank, ipos, h, hn, k, ctr):
    """Probe every rank in ``xs_ranks`` (ascending) against the index; returns the heap size."""
    n = P_sizes.shape[0]
    cnt = np.zeros(n, dtype=np.int32)
    li = np.empty(n, dtype=np.int32)
    lj = np.empty(n, dtype=np.int32)
    touched = np.empty(n, dtype=np.int32)
    in_x = np.zeros(ioff.shape[0] - 1, dtype=np.int32)
    for x in xs_ranks:
        tc, tu = _threshold(h, hn, k)
        ctr[0] += 1
        nt = _collect(x, P_off, P_tok, P_sizes, ioff, irank, ipos, tc, tu, cnt, li, lj, touched, ctr)
        hn = _verify(x, nt, P_uids, P_off, P_tok, P_sizes, cnt, li, lj, touched, in_x, h, hn, k, ctr)
    return hn


# --------------------------------------------------------------------------- public API

RESULT_FIELDS = ("userA", "userB", "size_a", "size_b", "common", "jaccard")


class TaskResult(NamedTuple):
    pairs: dict          # RESULT_FIELDS -> numpy arrays, best first
    counters: dict       # probes, entries_scanned, candidates, verified, merges, offered,
                         # floor0, final_floor, n_sample, timings (seconds)


def _heap_to_pairs(h, hn) -> dict:
    c, u, a, b, sa, sb = (h[f, :hn].copy() for f in range(6))
    jac = c / u
    order = np.lexsort((b, a, -jac))
    return {"userA": a[order], "userB": b[order], "size_a": sa[order], "size_b": sb[order],
            "common": c[order], "jaccard": jac[order]}


def _probe_rebuilding(P, own, h, hn, k, ctr, fc, fu, chunks, rebuild_gain):
    """Probe ``own`` (ascending ranks) in ``chunks`` slices; between slices rebuild the index at
    the current floor when it rose by >= ``rebuild_gain`` (any floor <= t is valid: t only rises).
    """
    index = _build_index(P.off, P.tok, P.sizes, P.n_movies, fc, fu)
    rebuilds = 0
    for part in np.array_split(own, max(1, min(chunks, own.size))):
        hn = _probe_all(part, P.uids, P.off, P.tok, P.sizes, *index, h, hn, k, ctr)
        if hn >= k and h[0, 0] / h[1, 0] >= fc / fu + rebuild_gain:
            fc, fu = int(h[0, 0]), int(h[1, 0])
            del index
            index = _build_index(P.off, P.tok, P.sizes, P.n_movies, fc, fu)
            rebuilds += 1
    return hn, index, rebuilds


def task_top_k(user_ids=None, offsets=None, tokens=None, k: int = 100, n_tasks: int = 1,
               task: int = 0, sample_size: int = 256, seed: int = 20240531,
               prepared: Prepared | None = None, chunks: int = 32,
               rebuild_gain: float = 0.02) -> TaskResult:
    """Top k of the pairs owned by ``task`` (plus the sample's pairs); see the module docstring.

    ``user_ids`` int64[n], ``offsets`` int64[n+1], ``tokens`` int32[N] raw movie ids (each row a
    set). Pass ``prepared`` (from :func:`prepare`) instead to share the preparation.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    if not 0 <= task < n_tasks:
        raise ValueError(f"task {task} not in [0, {n_tasks})")
    times = {}
    t0 = time.perf_counter()
    P = prepared if prepared is not None else prepare(user_ids, offsets, tokens)
    times["prepare"] = time.perf_counter() - t0
    n = P.sizes.size
    h = np.zeros((6, max(k, 1)), dtype=np.int64)
    ctr = np.zeros(N_COUNTERS, dtype=np.int64)
    is_sample = sample_users(P.uids, sample_size, seed)

    t0 = time.perf_counter()
    hn = 0
    if is_sample.any():
        index = _build_index(P.off, P.tok, P.sizes, P.n_movies, 0, 1)
        times["index_full"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        hn = _probe_all(np.flatnonzero(is_sample), P.uids, P.off, P.tok, P.sizes, *index, h, hn, k, ctr)
        del index
    times["phase1"] = time.perf_counter() - t0
    fc, fu = (int(h[0, 0]), int(h[1, 0])) if hn >= k else (0, 1)

    t0 = time.perf_counter()
    own = np.arange(task, n, n_tasks)
    own = own[~is_sample[own]]
    hn, index, rebuilds = _probe_rebuilding(P, own, h, hn, k, ctr, fc, fu, chunks, rebuild_gain)
    times["phase2"] = time.perf_counter() - t0
    lc, lu = (int(h[0, 0]), int(h[1, 0])) if hn >= k else (0, 1)
    counters = dict(zip(("probes", "entries_scanned", "candidates", "verified", "merges", "offered"),
                        ctr.tolist(), strict=False))
    counters.update(floor0=fc / fu, final_floor=lc / lu, n_sample=int(is_sample.sum()), movies=P.n_movies,
                    index_rebuilds=rebuilds, index_final_entries=int(index[1].size), timings=times)
    return TaskResult(_heap_to_pairs(h, hn), counters)


def merge_top(results, k: int) -> dict:
    """Best k distinct pairs of several results (TaskResult or pair dicts), best first."""
    parts = [r.pairs if isinstance(r, TaskResult) else r for r in results]
    cols = {f: np.concatenate([np.asarray(p[f]) for p in parts]) for f in RESULT_FIELDS}
    order = np.lexsort((cols["userB"], cols["userA"], -cols["jaccard"]))
    cols = {f: v[order] for f, v in cols.items()}
    keep = np.ones(order.size, dtype=bool)  # duplicates are adjacent after the sort
    keep[1:] = (cols["userA"][1:] != cols["userA"][:-1]) | (cols["userB"][1:] != cols["userB"][:-1])
    return {f: v[keep][:k] for f, v in cols.items()}


def top_k_exact(user_ids, offsets, tokens, k: int = 100, n_tasks: int = 1, sample_size: int = 256,
                seed: int = 20240531, threads: bool = False):
    """All ``n_tasks`` tasks in this process (sharing one preparation); returns (pairs, results).

    ``threads=True`` runs the tasks in a thread pool (the kernels release the GIL).
    """
    P = prepare(user_ids, offsets, tokens)

    def run(task):
        return task_top_k(k=k, n_tasks=n_tasks, task=task, sample_size=sample_size, seed=seed,
                          prepared=P)

    if threads and n_tasks > 1:
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(n_tasks) as pool:
            results = list(pool.map(run, range(n_tasks)))
    else:
        results = [run(t) for t in range(n_tasks)]
    return merge_top(results, k), results
