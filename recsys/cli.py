"""Command line: parses arguments only, one command per MLproject entry point.

``python -m recsys <command> --help`` lists every option. Errors the user can fix print one
line naming the problem and exit with status 1; the MLflow run is left FAILED.
"""

from __future__ import annotations

import functools
import sys

import click

from recsys.constants import (
    DEFAULT_MIN_USER_RATINGS,
    DEFAULT_SEED,
    DEFAULT_SPLIT_DIR,
    DEFAULT_SPLIT_STRATEGY,
)
from recsys.errors import RecsysError


def _spark_error_message(err: BaseException) -> str | None:
    """A one-line summary of a JVM/Spark failure, so a Java stack is never the only message."""
    name = type(err).__name__
    if name in ("Py4JJavaError",) or type(err).__module__.startswith("pyspark"):
        text = str(err).strip().splitlines()
        first = next((ln for ln in text if "Exception" in ln or "Error" in ln), text[0] if text else name)
        # The deepest "Caused by" is what a user can act on (disk full, permission denied, ...).
        causes = [ln.strip()[len("Caused by: "):] for ln in text if ln.strip().startswith("Caused by: ")]
        cause = f" (root cause: {causes[-1][:300]})" if causes else ""
        return f"Spark failed: {first.strip().lstrip(': ')[:400]}{cause}"
    return None


def spark_options(func):
    """``--spark-master`` and ``--spark-conf`` for every command that runs Spark."""

    @click.option("--spark-master", default="", show_default=False,
                  help="Spark master URL (local[*], yarn, spark://host:7077, k8s://...). "
                       "Default: $SPARK_MASTER, else local[*].")
    @click.option("--spark-conf", multiple=True, metavar="KEY=VALUE",
                  help="Extra Spark setting; repeat, or separate several with ';'.")
    @functools.wraps(func)
    def wrapper(*args, spark_conf=(), **kwargs):
        pairs = [p.strip() for value in spark_conf for p in value.split(";") if p.strip()]
        return func(*args, spark_conf=pairs, **kwargs)

    return wrapper


def run_job(func, **kwargs):
    """Call a job; turn user-fixable errors into one line and exit status 1."""
    try:
        return func(**kwargs)
    except RecsysError as err:
        raise click.ClickException(str(err)) from err
    except Exception as err:
        message = _spark_error_message(err)
        if message is None:
            raise
        raise click.ClickException(message) from err


data_option = click.option(
    "--data", default="bundled", show_default=True,
    help="MovieLens zip or folder (local path or hdfs://, gs://, s3a:// URI); "
         "'bundled' = the embedded ml-latest-small.")
split_dir_option = click.option(
    "--split-dir", default=DEFAULT_SPLIT_DIR, show_default=True,
    help="Split directory (local path or Hadoop URI).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """recsys: MovieLens recommendations and segmentation, tracked with MLflow."""


@main.command()
@data_option
@split_dir_option
@click.option("--strategy", default=DEFAULT_SPLIT_STRATEGY, show_default=True,
              help="random, user or temporal.")
@click.option("--fractions", default="0.8,0.1,0.1", show_default=True,
              help="train,validation,test shares summing to 1.")
@click.option("--seed", type=int, default=DEFAULT_SEED, show_default=True)
@click.option("--min-user-ratings", type=int, default=DEFAULT_MIN_USER_RATINGS, show_default=True,
              help="Users with fewer ratings stay whole in train.")
@click.option("--overwrite", type=click.BOOL, default=False, show_default=True,
              help="Replace an existing split made with other parameters.")
@spark_options
def split(data, split_dir, strategy, fractions, seed, min_user_ratings, overwrite,
          spark_master, spark_conf):
    """Split MovieLens ratings into train/validation/test Parquet with a manifest."""
    from recsys import jobs

    run_job(jobs.split, data=data, split_dir=split_dir, strategy=strategy, fractions=fractions,
            seed=seed, min_user_ratings=min_user_ratings, overwrite=overwrite,
            spark_master=spark_master, spark_conf=spark_conf)


@main.command("pipeline")
@data_option
@split_dir_option
@spark_options
def pipeline(data, split_dir, spark_master, spark_conf):
    """The `main` entry point: every stage in order on one split, as nested runs."""
    from recsys import jobs

    run_job(jobs.pipeline, data=data, split_dir=split_dir, spark_master=spark_master,
            spark_conf=spark_conf)


if __name__ == "__main__":
    sys.exit(main())
