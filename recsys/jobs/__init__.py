"""One module per entry point, each a function: validate the parameters, call the library, log.

Each job opens its MLflow run with :func:`recsys.mlops.tracking.stage_run` and logs through
:mod:`recsys.mlops` (the run plumbing); library subpackages never import mlflow. A job that
raises leaves its run FAILED with the error recorded as the tag ``recsys.error`` and the artifact
``error.txt``. Progress goes through :func:`recsys.mlops.tracking.say`, the ``progress`` callable
every library call is given. :mod:`~recsys.jobs.common` holds what several jobs share.
"""

from recsys.jobs.als import als
from recsys.jobs.als_search import als_search
from recsys.jobs.baseline import baseline
from recsys.jobs.common import cached_split, data_source, ensure_split
from recsys.jobs.main import describe_pipeline, headline_metrics, pipeline
from recsys.jobs.promote import promote
from recsys.jobs.recommend import recommend
from recsys.jobs.split import split
from recsys.jobs.synthesize import synthesize
from recsys.jobs.twins import twins
from recsys.search.run import fit_and_judge

__all__ = ["als", "als_search", "baseline", "cached_split", "data_source", "describe_pipeline",
           "ensure_split", "fit_and_judge", "headline_metrics", "pipeline", "promote", "recommend", "split",
           "synthesize", "twins"]
