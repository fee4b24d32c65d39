"""The recommenders, one interface (:class:`Recommender`: fit, top_n, score_all, predict, save,
load): popularity, the bias baseline and Spark ALS with its typed config."""

from recsys.models.als import SENTINEL_ID, ALSConfig, ALSRecommender, with_biases
from recsys.models.als_layout import FactorModel, write_als_model, write_pipeline_model
from recsys.models.base import Recommender
from recsys.models.bias import BiasBaseline
from recsys.models.popularity import PopularityConfig, PopularityRecommender

__all__ = ["SENTINEL_ID", "ALSConfig", "ALSRecommender", "BiasBaseline", "FactorModel", "PopularityConfig",
           "PopularityRecommender", "Recommender", "with_biases", "write_als_model", "write_pipeline_model"]
