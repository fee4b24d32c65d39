"""Names and defaults shared by every stage: one place, imported everywhere."""

USER_COL = "userId"
ITEM_COL = "movieId"
RATING_COL = "rating"
TIMESTAMP_COL = "timestamp"
PREDICTION_COL = "prediction"

DEFAULT_SEED = 42
DEFAULT_K = 10
DEFAULT_RELEVANCE_THRESHOLD = 4.0

#: Split directory used when an entry point is given none (relative to the working directory).
DEFAULT_SPLIT_DIR = "outputs/split"
DEFAULT_SPLIT_STRATEGY = "random"
DEFAULT_SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
DEFAULT_MIN_USER_RATINGS = 0

SPLIT_PARTS = ("train", "validation", "test")

#: Ratings in MovieLens are 0.5 to 5.0 in half-star steps.
MIN_RATING = 0.5
MAX_RATING = 5.0

# Evaluation metric keys (recsys.evaluation returns them unprefixed; jobs log them as
# val_<key> and test_<key>).
RMSE = "rmse"
MAE = "mae"
COVERAGE = "coverage"
PRECISION = "precision_at_k"
RECALL = "recall_at_k"
NDCG = "ndcg_at_k"
MAP = "map_at_k"
N_USERS = "n_users_evaluated"
N_USERS_NO_RELEVANT = "n_users_no_relevant"
