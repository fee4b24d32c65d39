"""One function per entry point: opens the MLflow run, loads, calls the library, logs.

Library modules never import mlflow; this module (and ``registry.py``) are the only places
that do. A job that raises leaves its run FAILED with the error recorded as the tag
``recsys.error`` and the artifact ``error.txt``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
import traceback
import warnings

from recsys import __version__, fs
from recsys.constants import DEFAULT_SPLIT_DIR, SPLIT_PARTS

BUNDLED = "bundled"


def say(message: str) -> None:
    """Progress lines go to stderr so stdout stays clean for scripting."""
    print(message, file=sys.stderr, flush=True)


def data_source(data: str | None) -> str | None:
    """``None``, ``""`` and ``"bundled"`` all mean the bundled ml-latest-small."""
    return None if not data or data == BUNDLED else data


def check_tracking_server(timeout: float = 10.0) -> None:
    """Fail within ``timeout`` seconds, naming the URI, when an HTTP tracking server is down.

    Without this, MLflow's client retries with back-off for minutes before giving up.
    """
    import urllib.error
    import urllib.request

    import mlflow

    from recsys.errors import RecsysError

    uri = mlflow.get_tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        return  # the server answered (e.g. 401/404 behind a proxy): it is up
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise RecsysError(
            f"MLflow tracking server {uri} (MLFLOW_TRACKING_URI) is unreachable: {reason}; "
            "start it or point MLFLOW_TRACKING_URI at a running server") from err


@contextlib.contextmanager
def stage_run(stage: str, params: dict | None = None, run_name=None):
    """Start (or, under ``mlflow run``, resume) a run; record any error before re-raising.

    Inside another run (the ``main`` pipeline, a search) the new run is nested under it.
    """
    import mlflow

    nested = mlflow.active_run() is not None
    if not nested:
        check_tracking_server()
    resumed = not nested and bool(os.environ.get("MLFLOW_RUN_ID"))
    with mlflow.start_run(run_name=None if resumed else (run_name or stage),
                          nested=nested) as run:
        mlflow.set_tags({"recsys.stage": stage, "recsys.version": __version__})
        if params:
            mlflow.log_params(params)
        try:
            yield run
        except BaseException as err:
            message = f"{type(err).__name__}: {err}"
            with contextlib.suppress(Exception):
                mlflow.set_tag("recsys.error", message[:4900])
                mlflow.log_text(message + "\n\n" + traceback.format_exc(), "error.txt")
            raise


def log_json(obj, artifact_file: str) -> None:
    import mlflow

    mlflow.log_text(json.dumps(obj, indent=2, sort_keys=True, default=str), artifact_file)


def spark_session(spark_master: str | None, spark_conf):
    from recsys.spark import get_spark

    return get_spark(master=spark_master or None, conf=list(spark_conf or ()))


# ---------------------------------------------------------------- split


def split(data=None, split_dir=DEFAULT_SPLIT_DIR, strategy="random", fractions=(0.8, 0.1, 0.1),
          seed=42, min_user_ratings=0, overwrite=False, spark_master=None, spark_conf=()):
    """`split` entry point: MovieLens -> ``split_dir/{train,validation,test}`` + manifest.

    Logs: params (strategy, fractions, seed, min_user_ratings, data, split_dir), metrics
    ``<part>_rows|users|items`` and ``split_seconds``, artifact ``manifest.json``, and the
    three partitions as dataset inputs. Returns the manifest.
    """
    import mlflow

    from recsys.split import SplitConfig, parse_fractions

    with stage_run("split"):
        if isinstance(fractions, str):
            fractions = parse_fractions(fractions)
        config = SplitConfig(strategy=strategy, fractions=tuple(fractions), seed=seed,
                             min_user_ratings=min_user_ratings)
        mlflow.log_params({**config.as_params(), "data": data or BUNDLED, "split_dir": split_dir})
        spark = spark_session(spark_master, spark_conf)
        manifest, reused = create_split(spark, data, split_dir, config, overwrite=overwrite)
        log_split(spark, manifest, split_dir, reused)
        return manifest


def create_split(spark, data, split_dir, config, overwrite=False):
    from recsys.data.movielens import load_movielens
    from recsys.split import make_split

    start = time.time()
    ml = load_movielens(spark, data_source(data), progress=say)
    manifest, reused = make_split(spark, ml.ratings, config, split_dir, source=ml.source,
                                  source_checksum=ml.checksum, overwrite=overwrite, progress=say)
    say(f"[split] done in {time.time() - start:.1f}s ({'reused' if reused else 'written'})")
    return manifest, reused


def log_split(spark, manifest: dict, split_dir: str, reused: bool) -> None:
    """Log a split's counts, manifest and partitions (as dataset inputs) to the active run."""
    import mlflow
    import mlflow.data

    from recsys.split import load_split

    mlflow.set_tag("recsys.split_reused", str(reused).lower())
    metrics = {f"{part}_{k}": v for part, c in manifest["counts"].items() for k, v in c.items()}
    mlflow.log_metrics(metrics)
    log_json(manifest, "manifest.json")
    loaded = load_split(spark, split_dir)
    for part in SPLIT_PARTS:
        with warnings.catch_warnings():  # mlflow's int-column hint is about model inputs
            warnings.simplefilter("ignore")
            dataset = mlflow.data.from_spark(
                loaded.part(part), path=fs.to_uri(fs.join(split_dir, part)), name=part,
                digest=manifest["digests"][part].split("-", 1)[1][:16])
            mlflow.log_input(dataset, context=part)


def ensure_split(spark, data, split_dir):
    """Read ``split_dir``, creating it with the default split when it is missing.

    A split made from another source than ``data`` is an error: results would not be
    comparable with what the user asked for.
    """
    from recsys.split import SplitConfig, load_split, read_manifest

    if read_manifest(spark, split_dir) is None:
        say(f"[split] {split_dir} has no split yet: creating the default one")
        create_split(spark, data, split_dir, SplitConfig())
    loaded = load_split(spark, split_dir)
    if data_source(data) is not None:
        from recsys.data.movielens import source_checksum

        checksum = source_checksum(spark, fs.local_path(data) if fs.is_local(data) else data)
        if checksum != loaded.manifest.get("source_checksum"):
            from recsys.errors import RecsysError

            raise RecsysError(
                f"split_dir {split_dir} was made from {loaded.manifest.get('source')}, not from "
                f"data={data}; run the split for this data (with its own split_dir) first")
    return loaded


def temp_artifact_dir():
    return tempfile.TemporaryDirectory(prefix="recsys-artifacts-")


# ---------------------------------------------------------------- main pipeline


def pipeline(data=None, split_dir=DEFAULT_SPLIT_DIR, spark_master=None, spark_conf=()):
    """`main` entry point: every stage in order, each a nested run under one parent run."""
    with stage_run("main", {"data": data or BUNDLED, "split_dir": split_dir}):
        split(data=data, split_dir=split_dir, spark_master=spark_master, spark_conf=spark_conf)
