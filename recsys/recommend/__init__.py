"""The served recommender: factor export (:mod:`~recsys.recommend.factors`), top-K lists for
every user in Spark (:mod:`~recsys.recommend.batch`), and the MLflow pyfunc that serves them
(:mod:`~recsys.recommend.serving`: NumPy only, imports nothing from recsys, starts no JVM)."""

from recsys.recommend.batch import read_users, recommend_all
from recsys.recommend.factors import FORMAT, META_FILE, POPULAR_N, export_factors

__all__ = ["FORMAT", "META_FILE", "POPULAR_N", "export_factors", "read_users", "recommend_all"]
