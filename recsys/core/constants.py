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
#: Metrics that depend only on the held-out part, K and the relevance threshold, never on the
#: model: the same for every trial of a search, so a search logs them once, on its parent run.
SPLIT_ONLY_METRICS = (N_USERS, N_USERS_NO_RELEVANT)

#: MLflow experiment of every run a job starts, unless the user chose one (MLFLOW_EXPERIMENT_NAME
#: or MLFLOW_EXPERIMENT_ID; `mlflow run --experiment-name`, whose run is already made).
DEFAULT_EXPERIMENT = "recsys"
#: MLflow's run-name tag: the name the UI lists.
RUN_NAME_TAG = "mlflow.runName"
#: MLflow's run description tag: the markdown the run page shows at its top.
NOTE_TAG = "mlflow.note.content"
#: The experiment tag MLflow 3's UI reads to choose its view, and the value that opens the
#: model-training view (runs table, charts) instead of the GenAI one ("Send your first trace").
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_EXPERIMENT_KIND = "custom_model_development"

# Output columns of the top-K lists (recsys.evaluation.recommend, recsys.evaluation.topk,
# recsys.recommend.batch) and of the models' ``score_all`` / ``ranking``.
SCORE_COL = "score"
RANK_COL = "rank"

# MLflow run tags (set by recsys.mlops.tracking / recsys.jobs, read by recsys.mlops.registry).
TAG_STAGE = "recsys.stage"
TAG_VERSION = "recsys.version"
TAG_ERROR = "recsys.error"
TAG_FEEDBACK = "recsys.feedback"
TAG_OBJECTIVE = "recsys.objective"
TAG_SPLIT = "recsys.split_digest"
TAG_SPLIT_REUSED = "recsys.split_reused"
TAG_SEARCH_KEY = "recsys.search_key"
TAG_TRIAL = "recsys.trial"
TAG_BEST_RUN = "recsys.best_run_id"
TAG_FIRST_PARENT_RUN = "recsys.first_parent_run_id"
#: A search trial re-logged from the search state into another tracking store: its first run id.
TAG_RESTORED_FROM = "recsys.restored_from_run_id"
#: A restored best trial whose model was refitted to be logged: refit and recorded objective.
TAG_MODEL_REFIT = "recsys.model_refit"
#: Run tag of a search's best trial: the URI of its served top-K pyfunc (``models:/m-...``).
TAG_RECOMMENDER_URI = "recsys.recommender_uri"
TAG_RECOMMENDATIONS_REUSED = "recsys.recommendations_reused"
# A promote run's decision, one row of the model's promotion history (recsys.mlops.registry
# writes them under its lock and reads them back for ``promotion_history.csv``).
TAG_DECISION = "recsys.decision"
TAG_DECISION_REASON = "recsys.decision_reason"
TAG_DECISION_TIME = "recsys.decision_time"
#: The registered model a promote run decided about (the history is found by it).
TAG_PROMOTED_MODEL = "recsys.registered_model"
TAG_MODEL_RUN = "recsys.model_run_id"
TAG_FORCED = "recsys.forced"
#: Promote-run and model-version tag: the search run the candidate came from.
TAG_SOURCE_RUN = "recsys.source_run_id"
#: Model-version tag: the version's latest decision (promoted, kept, replaced, already_champion),
#: short for the model page; the words are in the version's description.
VERSION_DECISION_TAG = "decision"

# MLflow artifact names.
#: The Spark ALS model every ``als`` run and search trial logs (``runs:/<id>/model``).
ALS_MODEL_ARTIFACT = "model"
#: The served top-K pyfunc (``recsys/recommend/serving.py``) a search logs on its best trial
#: (``runs:/<id>/recommender``: what a bare run id given to ``recommend`` points at).
RECOMMENDER_ARTIFACT = "recommender"
#: Inside a recommender model: its ``artifacts`` entries (directories under ``artifacts/``).
FACTORS_ARTIFACT = "factors"
SPARK_MODEL_ARTIFACT = "spark_model"
RECOMMENDER_SPARK_MODEL = f"artifacts/{SPARK_MODEL_ARTIFACT}"
RECOMMENDER_META = f"artifacts/{FACTORS_ARTIFACT}/meta.json"
#: Written where a run failed: the redacted error and traceback.
ERROR_ARTIFACT = "error.txt"

#: Spark setting (``--spark-conf spark.recsys.als.blocks=N``): ALS user and item blocks, i.e.
#: the parallelism of every ALS fit. Unset: Spark's default, 10. About the number of cores
#: the job has is a good value on a cluster; 1-2 on tiny data (the tests). The block count
#: changes each block's random start, so factors (not their quality) differ slightly with it.
ALS_BLOCKS_CONF = "spark.recsys.als.blocks"
