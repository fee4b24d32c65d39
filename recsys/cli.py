"""Command line: parses arguments only, one command per MLproject entry point.

``python -m recsys <command> --help`` lists every option. Errors the user can fix print one
line naming the problem and exit with status 1; the MLflow run is left FAILED.
"""

from __future__ import annotations

import functools
import os
import sys

import click

from recsys.constants import (
    DEFAULT_K,
    DEFAULT_MIN_USER_RATINGS,
    DEFAULT_RELEVANCE_THRESHOLD,
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
    # MLflow's artifact progress bar writes ~100 lines per model download into the job's log
    # (one per file of a Spark model); the jobs print their own progress. Set it to true to see it.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


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


@main.command()
@click.option("--output", default="outputs/synthetic/ml-synthetic", show_default=True,
              help="Local folder, or a .zip file with --format zip.")
@click.option("--n-users", default="10000", show_default=True, help="Number of users.")
@click.option("--n-movies", default="20000", show_default=True, help="Number of movies.")
@click.option("--n-ratings", default="1000000", show_default=True,
              help="Target number of ratings (realised within ~1%).")
@click.option("--seed", default=str(DEFAULT_SEED), show_default=True)
@click.option("--rank", default="10", show_default=True, help="Latent factors behind the ratings.")
@click.option("--noise", default="0.5", show_default=True, help="Rating noise (standard deviation).")
@click.option("--n-twins", default="10", show_default=True, help="Planted near-duplicate users.")
@click.option("--format", "format_", default="folder", show_default=True, help="folder or zip.")
@click.option("--overwrite", type=click.BOOL, default=False, show_default=True,
              help="Replace an existing output.")
@spark_options
def synthesize(output, n_users, n_movies, n_ratings, seed, rank, noise, n_twins, format_, overwrite,
               spark_master, spark_conf):
    """Write a synthetic MovieLens release (ratings, movies, tags, links) at any scale."""
    from recsys import jobs

    run_job(jobs.synthesize, output=output, n_users=n_users, n_movies=n_movies, n_ratings=n_ratings,
            seed=seed, rank=rank, noise=noise, n_twins=n_twins, format=format_, overwrite=overwrite,
            spark_master=spark_master, spark_conf=spark_conf)


@main.command()
@data_option
@split_dir_option
@click.option("--kind", default="count", show_default=True,
              help="count (most rated) or damped_mean (Bayesian average rating).")
@click.option("--damping", default="10", show_default=True,
              help="damped_mean: pseudo-ratings at the global mean added to every movie (>= 0).")
@click.option("--k", default=str(DEFAULT_K), show_default=True, help="List length K of the ranking metrics.")
@click.option("--relevance-threshold", default=str(DEFAULT_RELEVANCE_THRESHOLD), show_default=True,
              help="A held-out rating at least this high is relevant.")
@click.option("--evaluate-test", default="false", show_default=True,
              help="Also compute test metrics (true/false); keep off except for final candidates.")
@spark_options
def baseline(data, split_dir, kind, damping, k, relevance_threshold, evaluate_test,
             spark_master, spark_conf):
    """Popularity baseline and bias baseline, evaluated on the validation split."""
    from recsys import jobs

    run_job(jobs.baseline, data=data, split_dir=split_dir, kind=kind, damping=damping, k=k,
            relevance_threshold=relevance_threshold, evaluate_test=evaluate_test,
            spark_master=spark_master, spark_conf=spark_conf)


@main.command()
@data_option
@split_dir_option
@click.option("--rank", default="10", show_default=True, help="Latent factors (>= 1).")
@click.option("--reg-param", default="0.1", show_default=True, help="L2 regularisation (>= 0).")
@click.option("--max-iter", default="10", show_default=True, help="ALS sweeps (>= 1).")
@click.option("--alpha", default="1.0", show_default=True, help="Implicit confidence weight (> 0).")
@click.option("--implicit-prefs", default="false", show_default=True,
              help="true: implicit-feedback ALS (ranking); false: explicit (ratings, RMSE).")
@click.option("--nonnegative", default="false", show_default=True, help="Non-negative factors.")
@click.option("--biases", default="true", show_default=True,
              help="Explicit mode: fit ALS to the residuals of the bias baseline and add the biases back.")
@click.option("--seed", default=str(DEFAULT_SEED), show_default=True)
@click.option("--k", default=str(DEFAULT_K), show_default=True, help="Cut-off of the ranking metrics.")
@click.option("--relevance-threshold", default=str(DEFAULT_RELEVANCE_THRESHOLD), show_default=True,
              help="Held-out ratings at least this are relevant.")
@spark_options
def als(data, split_dir, rank, reg_param, max_iter, alpha, implicit_prefs, nonnegative, biases, seed, k,
        relevance_threshold, spark_master, spark_conf):
    """Fit one ALS model, evaluate it on validation, log it to MLflow."""
    from recsys import jobs

    run_job(jobs.als, data=data, split_dir=split_dir, rank=rank, reg_param=reg_param,
            max_iter=max_iter, alpha=alpha, implicit_prefs=implicit_prefs, nonnegative=nonnegative,
            biases=biases, seed=seed, k=k, relevance_threshold=relevance_threshold, spark_master=spark_master,
            spark_conf=spark_conf)


@main.command("als-search")
@data_option
@split_dir_option
@click.option("--feedback", default="explicit", show_default=True, help="explicit or implicit.")
@click.option("--objective", default="auto", show_default=True,
              help="rmse, precision_at_k, ndcg_at_k or map_at_k; auto = rmse (explicit), "
                   "precision_at_k (implicit).")
@click.option("--max-evals", default="20", show_default=True, help="Number of trials.")
@click.option("--max-iter", default="10", show_default=True, help="ALS sweeps per trial.")
@click.option("--k", default=str(DEFAULT_K), show_default=True, help="Cut-off of the ranking metrics.")
@click.option("--relevance-threshold", default=str(DEFAULT_RELEVANCE_THRESHOLD), show_default=True)
@click.option("--seed", default=str(DEFAULT_SEED), show_default=True, help="Seed of TPE and ALS.")
@click.option("--on-error", default="continue", show_default=True,
              help="A failing trial: continue (recorded FAILED) or abort.")
@click.option("--space", default="experiments/search_space.yaml", show_default=True,
              help="Search space YAML (explicit/implicit sections).")
@spark_options
def als_search(data, split_dir, feedback, objective, max_evals, max_iter, k, relevance_threshold,
               seed, on_error, space, spark_master, spark_conf):
    """Hyperopt TPE search over ALS; one nested run per trial; resumable."""
    from recsys import jobs

    run_job(jobs.als_search, data=data, split_dir=split_dir, feedback=feedback, objective=objective,
            max_evals=max_evals, max_iter=max_iter, k=k, relevance_threshold=relevance_threshold,
            seed=seed, on_error=on_error, space=space, spark_master=spark_master,
            spark_conf=spark_conf)


@main.command()
@click.option("--run-id", default="", help="als_search run (default: the latest finished one).")
@click.option("--model-name", default="", show_default=False,
              help="Registered model name. Default: recsys-als for a ranking objective, "
                   "recsys-als-ratings for rmse.")
@click.option("--force", default="false", show_default=True,
              help="true: make the candidate champion even if it does not beat the baseline and champion.")
def promote(run_id, model_name, force):
    """Register a search's best model; move @champion only if it beats the baseline and the
    champion on test."""
    from recsys import jobs

    run_job(jobs.promote, run_id=run_id, model_name=model_name, force=force)


@main.command()
@data_option
@click.option("--min-ratings", default="20", show_default=True,
              help="Users who rated fewer movies are left out (>= 1).")
@click.option("--n-pairs", default="100", show_default=True, help="Top pairs to return (1..10000).")
@click.option("--n-hashes", default="128", show_default=True, help="MinHash functions per user (1..1024).")
@click.option("--method", default="banded", show_default=True, help="banded, approx_join or exact.")
@click.option("--target-similarity", default="0.5", show_default=True,
              help="banded: pairs at least this similar are candidates with probability >= 0.99; in (0, 1).")
@click.option("--bucket-cap", default="500", show_default=True,
              help="banded: buckets with more users are split into sub-buckets of this size (>= 2).")
@click.option("--n-random", default="100", show_default=True,
              help="Random user pairs the twins are compared with (0..10000).")
@click.option("--min-common", default="2", show_default=True,
              help="Fewest co-rated movies for a Pearson correlation (>= 2).")
@click.option("--compare-exact", default="false", show_default=True,
              help="Also compute the exact top pairs and log the recall (true/false).")
@click.option("--seed", default=str(DEFAULT_SEED), show_default=True)
@spark_options
def twins(data, min_ratings, n_pairs, n_hashes, method, target_similarity, bucket_cap, n_random,
          min_common, compare_exact, seed, spark_master, spark_conf):
    """Movie twins: most similar user pairs by MinHash LSH, validated with Pearson correlations."""
    from recsys import jobs

    run_job(jobs.twins, data=data, min_ratings=min_ratings, n_pairs=n_pairs, n_hashes=n_hashes,
            method=method, target_similarity=target_similarity, bucket_cap=bucket_cap, n_random=n_random,
            min_common=min_common, compare_exact=compare_exact, seed=seed,
            spark_master=spark_master, spark_conf=spark_conf)


@main.command()
@click.option("--model-uri", default="models:/recsys-als@champion", show_default=True,
              help="models:/<name>@<alias>, models:/<name>/<version>, runs:/<run id>/<path> or a run id.")
@click.option("--users", default="", show_default=False,
              help="File or URI of user ids (one per line, or a CSV with a userId column); "
                   "default: every user the model knows.")
@click.option("--output", default="outputs/recommendations", show_default=True,
              help="Parquet directory to write (local path or Hadoop URI).")
@click.option("--k", default=str(DEFAULT_K), show_default=True, help="Movies per user.")
@click.option("--split-dir", default=DEFAULT_SPLIT_DIR, show_default=True,
              help="Split whose train part holds the seen movies; '' or a missing default = the model's.")
@data_option
@spark_options
def recommend(model_uri, users, output, k, split_dir, data, spark_master, spark_conf):
    """Top-K unseen movies for every user (or a list of users) from a registered model, as Parquet."""
    from recsys import jobs

    run_job(jobs.recommend, model_uri=model_uri, users=users, output=output, k=k, split_dir=split_dir,
            data=data, spark_master=spark_master, spark_conf=spark_conf)


@main.command("pipeline")
@data_option
@split_dir_option
@click.option("--ranking-evals", default="8", show_default=True,
              help="Trials of the ranking (implicit, precision_at_k) search.")
@click.option("--rating-evals", default="4", show_default=True,
              help="Trials of the rating (explicit, rmse) search.")
@click.option("--max-iter", default="10", show_default=True, help="ALS sweeps per trial.")
@spark_options
def pipeline(data, split_dir, ranking_evals, rating_evals, max_iter, spark_master, spark_conf):
    """The `main` entry point: every stage in order on one split, as nested runs."""
    from recsys import jobs

    run_job(jobs.pipeline, data=data, split_dir=split_dir, ranking_evals=ranking_evals,
            rating_evals=rating_evals, max_iter=max_iter, spark_master=spark_master, spark_conf=spark_conf)


if __name__ == "__main__":
    sys.exit(main())
