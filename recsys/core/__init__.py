"""What every layer shares: column names and defaults (:mod:`~recsys.core.constants`), errors,
parameter declarations and validators (:mod:`~recsys.core.params`), the progress convention,
file systems (:mod:`~recsys.core.fs`) and the Spark session (:mod:`~recsys.core.spark`).

Imports nothing from the rest of recsys. ``constants`` is a module of names: import them from it.
"""

from recsys.core import constants, fs
from recsys.core.errors import DataValidationError, RecsysError
from recsys.core.metrics import OBJECTIVES, Objective, finite_metrics
from recsys.core.params import Param, check_bool, check_choice, check_float, check_int, param, validate
from recsys.core.progress import Progress, quiet
from recsys.core.spark import find_java_home, get_spark, parse_conf, released_models

__all__ = ["DataValidationError", "Param", "Progress", "RecsysError", "check_bool", "check_choice",
           "check_float", "check_int", "constants", "find_java_home", "fs", "get_spark", "param",
           "parse_conf", "quiet", "validate", "OBJECTIVES", "Objective", "finite_metrics",
           "released_models"]
