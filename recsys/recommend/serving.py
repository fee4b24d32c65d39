"""The registered recommender: an MLflow pyfunc serving top-K lists and pair scores from NumPy arrays.

A standalone "models from code" file: ``mlflow.pyfunc.log_model(python_model=<this file>,
artifacts={"factors": <dir written by recsys.recommend.factors.export_factors>})`` logs it without any
pickle, and loading it runs this file. It imports numpy, pandas, json and mlflow only (no
recsys, no pyspark), so the served model starts no JVM.

Requests (a pandas DataFrame in-process; JSON ``dataframe_split`` / ``dataframe_records`` /
``inputs`` when served), columns:

- ``userId`` (integer, required); ``k`` (integer 1..1000, optional, per row; else the ``k``
  param, default 10): one row per recommendation, ``userId, rank, movieId, title, score,
  source``, users in input order. ``source`` is ``"model"`` for a user the model knows, whose
  training movies are excluded, ranked by the model's score descending then movieId ascending;
  and ``"popularity"`` for a user it does not know (cold start), who gets the stored popularity
  list (score = training rating count). ``kind="rating"`` models rank by the raw predicted
  rating and report it clipped to 0.5..5 (so equal reported scores at 5.0 keep the model's
  order). A user with fewer than ``k`` unseen movies gets fewer rows.
- ``userId, movieId`` (integers): one row per input row, in input order: ``userId, movieId,
  score`` (double, never NaN). ``kind="ranking"``: the preference ``p_u . q_i``, 0.0 when the
  user or movie is unknown; ``kind="rating"``: the rating clipped to 0.5..5, or when either is
  unknown the bias baseline ``mu + b_user + b_movie`` (offset 0 when unknown), clipped.

Anything else (no ``userId``, another column, a non-integer id, ``k`` outside 1..1000, an empty
frame, ``k`` with ``movieId``) raises ``MlflowException(INVALID_PARAMETER_VALUE)``: HTTP 400
with the message when served. The input schema is not declared in the MLflow signature on
purpose: MLflow's enforcement silently drops undeclared columns before ``predict`` sees them, so
``{"userId": 1, "foo": 2}`` could not be refused; the signature declares the ``k`` param and the
outputs, and the MLmodel ``metadata`` describes the inputs (see ``INPUT_DOC``).

Cost per user: one ``movies x rank`` float32 matrix-vector product plus two passes over the
``movies`` scores (partition, then ties); users are scored in blocks of ``BLOCK_SCORES`` scores.
The arrays are memory-mapped (``np.load(mmap_mode="r")``): loading reads only ``meta.json`` and
the titles, and pages come in as requests touch them.
"""

import json
import os

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

USER, ITEM, K = "userId", "movieId", "k"
COLUMNS = (USER, ITEM, K)
OUTPUT_COLUMNS = (USER, "rank", ITEM, "title", "score", "source")
PAIR_COLUMNS = (USER, ITEM, "score")
DEFAULT_K, MAX_K = 10, 1000
FORMAT = 1
KINDS = ("ranking", "rating")
#: Scores held at once when several users are ranked (float32: 16 MB).
BLOCK_SCORES = 4_000_000
#: Pairs scored at once in pair mode (two float64 gathers of this many rows x rank).
PAIR_BLOCK = 65_536
#: BLAS threads while answering one request (see ``predict``).
SERVING_BLAS_THREADS = 1
INPUT_DOC = {
    USER: "integer, required: the user to recommend for (or to score, with movieId)",
    ITEM: "integer, optional: with it, one score per (userId, movieId) row instead of a list",
    K: f"integer {1}..{MAX_K}, optional, lists only: the list length for that row (default: param k)",
}


def model_signature():
    """The MLflow signature: the ``k`` param (long, default 10) and the output columns of both
    request shapes (``rank``, ``title``, ``source``: lists only). No input schema (see the module
    docstring: enforcing one would drop unknown columns silently); ``INPUT_DOC`` describes them."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    outputs = Schema([ColSpec("long", USER), ColSpec("long", "rank", required=False), ColSpec("long", ITEM),
                      ColSpec("string", "title", required=False), ColSpec("double", "score"),
                      ColSpec("string", "source", required=False)])
    return ModelSignature(inputs=None, outputs=outputs, params=ParamSchema([ParamSpec(K, "long", DEFAULT_K)]))


def _bad(message: str) -> MlflowException:
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def _as_ids(values, name: str) -> np.ndarray:
    """A column of integers (int dtype, or floats / objects holding whole numbers) -> int64.

    Refuses, naming the column and the first bad row: null, booleans, strings, fractions,
    numbers beyond int64.
    """
    array = np.asarray(values)
    if array.dtype.kind in "iu":
        if array.dtype.kind == "u" and array.size and array.max() > np.iinfo(np.int64).max:
            raise _bad(f"{name} must be integers; {int(array.max())} is too large")
        return array.astype(np.int64, copy=False)
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array) | (array != np.round(array)) | (np.abs(array) >= 2.0**63)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            shown = "null" if np.isnan(array[row]) else repr(float(array[row]))
            raise _bad(f"{name} must be integers; row {row} is {shown}")
        return array.astype(np.int64)
    out = np.empty(array.shape[0], dtype=np.int64)
    for row, value in enumerate(array.tolist()):
        whole = isinstance(value, int) and not isinstance(value, bool)
        if isinstance(value, float) and np.isfinite(value) and value == int(value):
            value, whole = int(value), True
        if not whole or not -(2**63) <= value < 2**63:
            shown = "null" if value is None or (isinstance(value, float) and np.isnan(value)) else repr(value)
            raise _bad(f"{name} must be integers; row {row} is {shown}")
        out[row] = value
    return out


def _check_k(k: np.ndarray) -> np.ndarray:
    bad = (k < 1) | (k > MAX_K)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise _bad(f"k must be an integer in 1..{MAX_K}; row {row} is {int(k[row])}")
    return k


def _lookup(sorted_ids: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``ids`` in ``sorted_ids`` and whether each was found."""
    if sorted_ids.shape[0] == 0:
        return np.zeros(ids.shape[0], dtype=np.int64), np.zeros(ids.shape[0], dtype=bool)
    # query in the table's own dtype: searchsorted would otherwise convert the whole table (331k
    # ids: ~2.5 ms) on every call; ids outside that dtype's range are unknown anyway
    info = np.iinfo(sorted_ids.dtype)
    inside = (ids >= info.min) & (ids <= info.max)
    query = np.where(inside, ids, 0).astype(sorted_ids.dtype)
    pos = np.minimum(np.searchsorted(sorted_ids, query), sorted_ids.shape[0] - 1)
    return pos, inside & (sorted_ids[pos] == query)


def _offsets(sorted_ids: np.ndarray, values: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``values`` at ``ids`` (``values[i]`` belongs to ``sorted_ids[i]``); 0.0 for an unknown id."""
    if sorted_ids.shape[0] == 0:
        return np.zeros(ids.shape[0], dtype=np.float64)
    pos, found = _lookup(sorted_ids, ids)
    return np.where(found, values[pos], 0.0)


def top_positions(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` largest finite ``scores``, by score descending then position ascending.

    Exact at the boundary: when several positions tie with the k-th score, the lowest positions
    win (positions are movieIds in ascending order, so ties go to the lower movieId). ``-inf``
    marks excluded positions; ``k`` must not exceed the finite ones.
    """
    n = scores.shape[0]
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if k < n:
        part = np.argpartition(scores, n - k)[n - k:]
        threshold = scores[part].min()
        above = np.flatnonzero(scores > threshold)
        ties = np.flatnonzero(scores == threshold)[: k - above.shape[0]]
        chosen = np.concatenate([above, ties])
    else:
        chosen = np.arange(n)
    return chosen[np.lexsort((chosen, -scores[chosen]))]


class FactorRecommender(mlflow.pyfunc.PythonModel):
    """Top-K lists and pair scores from the arrays of ``recsys.recommend.factors`` (see the module doc)."""

    def load_context(self, context):
        try:  # inspecting the loaded BLAS libraries costs milliseconds: once, not per request
            from threadpoolctl import ThreadpoolController

            self._blas = ThreadpoolController()
        except ImportError:  # a server without threadpoolctl keeps NumPy's default threads
            self._blas = None
        root = context.artifacts["factors"]
        meta_path = os.path.join(root, "meta.json")
        try:
            with open(meta_path, encoding="utf-8") as fh:
                meta = json.load(fh)
        except (OSError, ValueError) as err:
            raise MlflowException(f"{meta_path} is missing or not JSON: {err}") from err
        if meta.get("format") != FORMAT or meta.get("kind") not in KINDS:
            raise MlflowException(f"{meta_path}: format {meta.get('format')!r} / kind {meta.get('kind')!r} "
                                  f"unknown to this server (expects format {FORMAT}, kind in {KINDS})")
        self.meta = meta
        self.kind = meta["kind"]

        def load(name: str) -> np.ndarray:
            # memory-mapped: load time and RSS do not grow with the model; np.asarray drops the
            # np.memmap subclass so arithmetic returns plain arrays
            return np.asarray(np.load(os.path.join(root, name), mmap_mode="r", allow_pickle=False))

        self.user_ids = load("user_ids.npy")
        self.user_factors = load("user_factors.npy")
        self.item_ids = load("item_ids.npy")
        self.item_factors = load("item_factors.npy")
        self.seen_indptr = load("seen_indptr.npy")
        self.seen_indices = load("seen_indices.npy")
        self.popular_ids = load("popular_ids.npy")
        self.popular_scores = load("popular_scores.npy")
        if self.kind == "rating":
            self.global_mean = float(meta["global_mean"])
            self.min_rating, self.max_rating = float(meta["min_rating"]), float(meta["max_rating"])
            self.bias_user_ids, self.bias_user = load("bias_user_ids.npy"), load("bias_user.npy")
            self.bias_item_ids, self.bias_item = load("bias_item_ids.npy"), load("bias_item.npy")
        title_ids, titles = np.zeros(0, dtype=np.int64), []
        titles_path = os.path.join(root, "titles.json")
        if os.path.exists(titles_path):
            with open(titles_path, encoding="utf-8") as fh:
                table = json.load(fh)
            title_ids, titles = np.asarray(table["movieId"], dtype=np.int64), table["title"]
        # one title per stored movie and per popular movie, None where the catalogue has none
        self.item_titles = self._titles_for(self.item_ids, title_ids, titles)
        self.popular_titles = self._titles_for(self.popular_ids, title_ids, titles)

    @staticmethod
    def _titles_for(ids, title_ids, titles) -> np.ndarray:
        pos, found = _lookup(title_ids, ids.astype(np.int64))
        table = np.array(list(titles) + [None], dtype=object)
        return table[np.where(found, pos, len(titles))]

    # ----------------------------------------------------------------- entry point

    def predict(self, context, model_input: pd.DataFrame, params=None):
        # One BLAS thread per request: a single user's scores are one (movies x rank) product,
        # which OpenBLAS splits over every core; under a server's concurrent requests the
        # threads wait on each other. Measured at full scale (experiments/results/serving.md):
        # HTTP p99 45-61 ms with the default threads, 24-28 ms with one.
        limiter = getattr(self, "_blas", None)
        if limiter is None:
            return self._predict(model_input, params)
        with limiter.limit(limits=SERVING_BLAS_THREADS, user_api="blas"):
            return self._predict(model_input, params)

    def _predict(self, model_input, params):
        frame = self._frame(model_input)
        users = _as_ids(frame[USER].to_numpy(), USER)
        if ITEM in frame.columns:
            if K in frame.columns:
                raise _bad("k applies to lists (no movieId column); drop k to score (userId, movieId) pairs")
            return self.score_pairs(users, _as_ids(frame[ITEM].to_numpy(), ITEM))
        if K in frame.columns:
            k = _check_k(_as_ids(frame[K].to_numpy(), K))
        else:
            k = np.full(users.shape[0], self._param_k(params), dtype=np.int64)
        return self.recommend(users, k)

    @staticmethod
    def _frame(model_input) -> pd.DataFrame:
        if isinstance(model_input, dict):
            try:
                model_input = pd.DataFrame({key: np.atleast_1d(value) for key, value in model_input.items()})
            except ValueError as err:
                raise _bad(f"the input columns have different lengths: {err}") from err
        if not isinstance(model_input, pd.DataFrame):
            raise _bad(f"input must be a DataFrame with a {USER} column; got {type(model_input).__name__}")
        names = [str(c) for c in model_input.columns]
        unknown = [c for c in names if c not in COLUMNS]
        if unknown:
            raise _bad(f"unknown column(s) {unknown}; allowed: {', '.join(COLUMNS)} ({USER} required)")
        if len(set(names)) != len(names):
            raise _bad(f"duplicate columns in {names}")
        if USER not in names:
            raise _bad(f"missing column {USER}: every row needs a {USER} (optional: {ITEM}, {K})")
        if model_input.shape[0] == 0:
            raise _bad(f"the input is empty: give at least one row with a {USER}")
        return model_input

    @staticmethod
    def _param_k(params) -> int:
        value = (params or {}).get(K)
        if value is None:
            return DEFAULT_K
        if isinstance(value, bool) or not isinstance(value, (int, np.integer, float, np.floating)) \
                or not float(value).is_integer() or not 1 <= value <= MAX_K:
            raise _bad(f"k must be an integer in 1..{MAX_K}; got {value!r}")
        return int(value)

    # ----------------------------------------------------------------- lists

    def recommend(self, users: np.ndarray, k: np.ndarray) -> pd.DataFrame:
        """Top-``k[i]`` rows for each ``users[i]``, in input order (see the module docstring)."""
        pos, known = _lookup(self.user_ids, users)
        parts: list[tuple] = []
        per_block = max(1, BLOCK_SCORES // max(1, self.item_ids.shape[0]))
        known_rows = np.flatnonzero(known)
        lists: dict[int, tuple] = {}
        for start in range(0, known_rows.shape[0], per_block):
            rows = known_rows[start:start + per_block]
            # one BLAS call per block of users; a single user is a matrix-vector product
            if rows.shape[0] == 1:  # a matrix-vector product: the common single-user request
                block = (self.item_factors @ self.user_factors[pos[rows[0]]])[np.newaxis, :]
            else:
                block = self.user_factors[pos[rows]] @ self.item_factors.T
            for offset, row in enumerate(rows):
                lists[int(row)] = self._model_list(block[offset], int(pos[row]), int(k[row]))
        for row in range(users.shape[0]):
            if known[row]:
                items, titles, scores = lists[row]
                source = "model"
            else:
                n = min(int(k[row]), self.popular_ids.shape[0])
                items, titles, scores = self.popular_ids[:n], self.popular_titles[:n], self.popular_scores[:n]
                source = "popularity"
            parts.append((users[row], items, titles, scores, source))
        lengths = np.array([p[1].shape[0] for p in parts], dtype=np.int64)
        return pd.DataFrame({
            USER: np.repeat(np.array([p[0] for p in parts], dtype=np.int64), lengths),
            "rank": np.concatenate([np.arange(1, n + 1, dtype=np.int64) for n in lengths]),
            ITEM: np.concatenate([p[1] for p in parts]).astype(np.int64),
            "title": np.concatenate([p[2] for p in parts]),
            "score": np.concatenate([p[3] for p in parts]).astype(np.float64),
            "source": np.repeat(np.array([p[4] for p in parts], dtype=object), lengths),
        })

    def _model_list(self, scores: np.ndarray, user_pos: int, k: int):
        seen = self.seen_indices[self.seen_indptr[user_pos]:self.seen_indptr[user_pos + 1]]
        scores[seen] = -np.inf  # the block is this call's own buffer
        chosen = top_positions(scores, min(k, scores.shape[0] - seen.shape[0]))
        values = scores[chosen].astype(np.float64)
        if self.kind == "rating":
            values = np.clip(values, self.min_rating, self.max_rating)
        return self.item_ids[chosen], self.item_titles[chosen], values

    # ----------------------------------------------------------------- pairs

    def score_pairs(self, users: np.ndarray, items: np.ndarray) -> pd.DataFrame:
        """One score per (user, movie), in input order (see the module docstring)."""
        upos, uknown = _lookup(self.user_ids, users)
        ipos, iknown = _lookup(self.item_ids, items)
        both = uknown & iknown
        scores = np.zeros(users.shape[0], dtype=np.float64)
        rows = np.flatnonzero(both)
        for start in range(0, rows.shape[0], PAIR_BLOCK):
            chunk = rows[start:start + PAIR_BLOCK]
            left = self.user_factors[upos[chunk]].astype(np.float64)
            right = self.item_factors[ipos[chunk]].astype(np.float64)
            scores[chunk] = np.einsum("ij,ij->i", left, right)
        if self.kind == "rating":
            rest = ~both
            if rest.any():
                scores[rest] = (self.global_mean + _offsets(self.bias_user_ids, self.bias_user, users[rest])
                                + _offsets(self.bias_item_ids, self.bias_item, items[rest]))
            np.clip(scores, self.min_rating, self.max_rating, out=scores)
        return pd.DataFrame({USER: users, ITEM: items, "score": scores})


mlflow.models.set_model(FactorRecommender())
