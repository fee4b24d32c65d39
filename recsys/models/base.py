"""The interface every recommender implements, so one evaluation judges them all.

A model is fitted on a training DataFrame of ratings (``userId, movieId, rating, timestamp``)
and then answers three questions, all as lazy Spark DataFrames (nothing collected):

- :meth:`Recommender.top_n` — for the given users, the ``n`` best-scored movies each,
  *including* movies the user already rated (removing those is the evaluation's job, done
  once in ``recsys.evaluation.recommend`` for every model);
- :meth:`Recommender.score_all` — every scorable movie for the given users; only called for the
  few heavy users whose seen set is too large for ``top_n`` with slack;
- :meth:`Recommender.predict` — a rating for each (userId, movieId) pair, null where the model
  cannot score it (cold start); the evaluation fills those from the bias baseline.

``save(path)`` / ``load(path)`` round-trip a fitted model through a directory (local path or
Hadoop URI) without pickle.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod

from recsys.core import fs
from recsys.core.errors import RecsysError

#: File written last by ``save``: its presence marks a complete save.
META_FILE = "config.json"


def read_meta(spark, path: str, model: str, described: str) -> dict:
    """The ``config.json`` of a saved model, checked to be a ``model`` (e.g. ``"als"``);
    ``described`` names it in errors (e.g. ``"an ALS model"``)."""
    meta_path = fs.join(path, META_FILE)
    if not fs.exists(spark, meta_path):
        raise RecsysError(f"{path} has no {META_FILE}: not a saved {described.split(' ', 1)[1]}")
    meta = json.loads(fs.read_text(spark, meta_path))
    if meta.get("model") != model:
        raise RecsysError(f"{path} holds a {meta.get('model')!r} model, not {described}")
    return meta


class Recommender(ABC):
    #: Whether ``predict`` gives ratings on the 0.5-5 scale (RMSE is only logged when true).
    predicts_ratings: bool = False
    #: Short name used in run names and artifacts.
    name: str = "model"

    @abstractmethod
    def fit(self, train) -> Recommender:
        """Fit on ``train`` (ratings DataFrame); returns self."""

    @abstractmethod
    def top_n(self, users, n: int):
        """``users``: DataFrame with ``userId``. Returns ``userId, movieId, score``: at most ``n``
        rows per user, the highest scores, seen movies included. Ties: lower movieId first."""

    @abstractmethod
    def score_all(self, users):
        """``userId, movieId, score`` for every movie the model can score, for ``users``."""

    @abstractmethod
    def predict(self, pairs):
        """``pairs`` with ``userId, movieId`` (other columns kept) -> same rows plus
        ``prediction`` (double, null where the model cannot score the pair)."""

    @abstractmethod
    def save(self, path: str) -> None:
        """Write the fitted model under ``path`` (a directory that must not exist)."""

    @classmethod
    @abstractmethod
    def load(cls, spark, path: str) -> Recommender:
        """Read a model written by :meth:`save`."""
