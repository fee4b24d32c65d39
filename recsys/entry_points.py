"""Every entry point's parameters, declared once, in ``MLproject`` order.

``ENTRY_POINTS`` (keyed by the ``MLproject`` entry point) is what the CLI builds its options from
(``recsys.cli.options``) and what the jobs take their defaults from (:func:`declared`); the
config dataclasses contribute their own fields. ``tests/unit/jobs/test_mlproject.py`` checks that
``MLproject`` agrees on every name, type and default.
"""

from __future__ import annotations

import inspect

from recsys.core.constants import DEFAULT_SPLIT_DIR
from recsys.core.params import MAX_ITER, RELEVANCE_THRESHOLD, K, Param, params_of
from recsys.data.split import SplitConfig
from recsys.data.synthetic import SyntheticConfig
from recsys.models.als import ALSConfig
from recsys.models.popularity import PopularityConfig
from recsys.search.run import DEFAULT_SPACE, SearchConfig
from recsys.twins.find import TwinsConfig

BUNDLED = "bundled"

DATA = Param("data", BUNDLED, "MovieLens zip or folder (local path or hdfs://, gs://, s3a:// URI); "
                              f"'{BUNDLED}' = the embedded ml-latest-small.")
SPLIT_DIR = Param("split_dir", DEFAULT_SPLIT_DIR, "Split directory (local path or Hadoop URI).")
SPARK = (
    Param("spark_master", "", "Spark master URL (local[*], yarn, spark://host:7077, k8s://...). "
                              "Default: $SPARK_MASTER, else local[*]."),
    Param("spark_conf", (), "Extra Spark setting; repeat, or separate several with ';'.",
          multiple=True, metavar="KEY=VALUE"),
)
OVERWRITE = Param("overwrite", False, "Replace an existing output.")

ENTRY_POINTS: dict[str, list[Param]] = {
    "split": [DATA, SPLIT_DIR, *params_of(SplitConfig),
              OVERWRITE.but(help="Replace an existing split made with other parameters."), *SPARK],
    "synthesize": [Param("output", "outputs/synthetic/ml-synthetic",
                         "Local folder, or a .zip file with --format zip."),
                   *params_of(SyntheticConfig), OVERWRITE, *SPARK],
    "baseline": [DATA, SPLIT_DIR, *params_of(PopularityConfig), K, RELEVANCE_THRESHOLD,
                 Param("evaluate_test", False,
                       "Also compute test metrics; keep off except for final candidates."),
                 *SPARK],
    "als": [DATA, SPLIT_DIR, *params_of(ALSConfig), K, RELEVANCE_THRESHOLD, *SPARK],
    "als_search": [DATA, SPLIT_DIR, *params_of(SearchConfig),
                   Param("space", DEFAULT_SPACE, "Search space YAML (explicit/implicit sections)."), *SPARK],
    "promote": [
        Param("run_id", "", "als_search run (default: the latest finished one)."),
        Param("model_name", "", "Registered model name. Default: recsys-als for a ranking objective, "
                                "recsys-als-ratings for rmse."),
        Param("force", False, "true: make the candidate champion even if it does not beat the baseline "
                              "and champion."),
    ],
    "twins": [DATA, *params_of(TwinsConfig), *SPARK],
    "recommend": [
        Param("model_uri", "models:/recsys-als@champion",
              "models:/<name>@<alias>, models:/<name>/<version>, runs:/<run id>/<path> or a run id."),
        Param("users", "", "File or URI of user ids (one per line, or a CSV with a userId column); "
                           "default: every user the model knows."),
        Param("output", "outputs/recommendations", "Parquet directory to write (local path or Hadoop URI)."),
        K.but(help="Movies per user."),
        SPLIT_DIR.but(help="Split whose train part holds the seen movies; '' or a missing default = "
                           "the model's."),
        DATA, *SPARK],
    "main": [DATA, SPLIT_DIR,
             Param("ranking_evals", 8, "Trials of the ranking (implicit, precision_at_k) search.", low=1),
             Param("rating_evals", 4, "Trials of the rating (explicit, rmse) search.", low=1),
             MAX_ITER.but(help="ALS sweeps per trial."), *SPARK],
}


def declared(entry_point: str):
    """Give a job function its entry point's declared defaults (its parameters must be exactly
    the declared ones, in order), so no default is written twice."""
    params = ENTRY_POINTS[entry_point]

    def decorate(func):
        names = list(inspect.signature(func).parameters)
        if names != [p.name for p in params]:
            raise TypeError(f"{func.__name__}{names} does not match entry point {entry_point} "
                            f"{[p.name for p in params]}")
        func.__defaults__ = tuple(p.default for p in params)
        return func

    return decorate
