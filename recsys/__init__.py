"""recsys: MLflow-tracked PySpark movie recommendations and customer segmentation."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("recsys")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.1.0"
