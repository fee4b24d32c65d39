"""MLflow run plumbing shared by every job (``recsys.jobs``): runs, params, metrics, artifacts.

- :func:`stage_run` opens (or, under ``mlflow run``, resumes) a stage's run, nested inside an
  active one, and records any error (tag ``recsys.error``, artifact ``error.txt``) redacted by
  :func:`redact_secrets`; :func:`check_tracking_server` fails fast when the server is down.
  Runs go to the experiment ``recsys`` unless the user chose another
  (:func:`default_experiment_id`), which the UI opens in its model-training view
  (:func:`mark_training_experiment`), and are named by what they are (:func:`name_run`).
- :func:`log_new_params`, :func:`finite_metrics`, :func:`log_json`, :func:`temp_artifact_dir`:
  what a job logs and how.
- :func:`log_als_model` and :func:`log_recommender_model`: the two logged model forms.
- :func:`kill_stale_runs`, :func:`find_trial_run`, :func:`restore_trial_run` and
  :func:`adopt_trials`: a resumed search's runs, in this tracking store or another.
- :func:`spark_session`: the job's Spark session (warning about secrets passed as params).
- :func:`say`: the jobs' ``progress`` callable (library functions take ``progress``, default
  :func:`recsys.core.progress.quiet`; jobs pass this).

With ``registry.py`` this is where MLflow is imported; library modules never import it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import sys
import tempfile
import traceback
import warnings

from recsys import __version__
from recsys.core.constants import (
    ALS_MODEL_ARTIFACT,
    DEFAULT_EXPERIMENT,
    ERROR_ARTIFACT,
    EXPERIMENT_KIND_TAG,
    FACTORS_ARTIFACT,
    RECOMMENDER_ARTIFACT,
    RUN_NAME_TAG,
    SPARK_MODEL_ARTIFACT,
    SPLIT_ONLY_METRICS,
    TAG_ERROR,
    TAG_FIRST_PARENT_RUN,
    TAG_RESTORED_FROM,
    TAG_SEARCH_KEY,
    TAG_STAGE,
    TAG_VERSION,
    TRAINING_EXPERIMENT_KIND,
    USER_COL,
)
from recsys.core.metrics import finite_metrics


def say(message: str) -> None:
    """Progress lines go to stderr so stdout stays clean for scripting: the ``progress`` the
    jobs give library functions, and the jobs' own messages."""
    print(message, file=sys.stderr, flush=True)


def check_tracking_server(timeout: float = 10.0) -> None:
    """Fail within ``timeout`` seconds, naming the URI, when an HTTP tracking server is down.

    Without this, MLflow's client retries with back-off for minutes before giving up.
    """
    import urllib.error
    import urllib.request

    import mlflow

    from recsys.core.errors import RecsysError

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


# ---------------------------------------------------------------- secrets
# Credentials stay in the environment MLflow and Hadoop already read (MLFLOW_TRACKING_TOKEN,
# MLFLOW_TRACKING_PASSWORD, AWS_SECRET_ACCESS_KEY, ...) and in --spark-conf; no job logs them
# as params or tags. Error text is recorded in the run, so it is redacted first: a bad
# `--spark-conf "fs.s3a.secret.key XYZ"` must not put XYZ into the tracking store.

#: Names (env vars, Spark/Hadoop keys) whose values are secrets.
SECRET_NAME = re.compile(r"secret|passw|token|credential|private|signature|(^|[._-])key($|[._-])"
                         r"|access[._-]?key", re.IGNORECASE)
_SECRET_PAIR = re.compile(r"(?P<key>[\w.-]+)(?P<sep>\s*[=:]\s*|\s+)(?P<value>[^\s'\";,]+)")
REDACTED = "*****"


def redact_secrets(text: str) -> str:
    """``text`` with secret environment values and the values of secret-looking
    ``key=value`` / ``key value`` pairs replaced by ``*****``."""
    for name, value in os.environ.items():
        if SECRET_NAME.search(name) and len(value) >= 4:
            text = text.replace(value, REDACTED)
    return _SECRET_PAIR.sub(lambda m: f"{m['key']}{m['sep']}{REDACTED}" if SECRET_NAME.search(m["key"])
                            else m.group(0), text)


# ---------------------------------------------------------------- runs: experiment and name

#: MLflow's generated run names (``adjective-noun-123``), which say nothing about the run.
_GENERATED_NAME = re.compile(r"[a-z]+-[a-z]+-\d+")


def default_experiment_id() -> str | None:
    """The experiment a new top-level run goes to: ``None`` (MLflow's own choice) when the user
    chose one (``MLFLOW_EXPERIMENT_NAME`` / ``MLFLOW_EXPERIMENT_ID``, or ``mlflow.set_experiment``
    in this process), else the id of ``recsys`` (:data:`recsys.core.constants.DEFAULT_EXPERIMENT`),
    created when missing. Not ``mlflow.set_experiment``: a process-wide setting would outlive a
    change of tracking store."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import fluent

    from recsys.core.errors import RecsysError

    if os.environ.get("MLFLOW_EXPERIMENT_NAME") or os.environ.get("MLFLOW_EXPERIMENT_ID") \
            or getattr(fluent, "_active_experiment_id", None):
        return None
    client = mlflow.MlflowClient()
    for _attempt in range(2):
        found = client.get_experiment_by_name(DEFAULT_EXPERIMENT)
        if found is not None:
            if found.lifecycle_stage != "active":
                raise RecsysError(
                    f"the MLflow experiment {DEFAULT_EXPERIMENT!r} (id {found.experiment_id}) is deleted: "
                    f"restore it (mlflow experiments restore --experiment-id {found.experiment_id}) or "
                    "log elsewhere with MLFLOW_EXPERIMENT_NAME=<name>")
            return found.experiment_id
        try:
            return client.create_experiment(DEFAULT_EXPERIMENT)
        except MlflowException as err:  # another job created it meanwhile: read it again
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
    return client.get_experiment_by_name(DEFAULT_EXPERIMENT).experiment_id


#: Values of ``mlflow.experimentKind`` nobody chose: the UI's guesses and the empty value. Any
#: other value was picked by a user (the UI's kind selector) and is left alone.
_UNCHOSEN_KINDS = ("", "no_inferred_type", "genai_development_inferred", "custom_model_development_inferred")


def mark_training_experiment(client, experiment_id: str) -> None:
    """Tag the experiment ``mlflow.experimentKind`` = ``custom_model_development`` unless a user
    chose a kind: MLflow 3's UI then opens it on its runs table and charts, not on its GenAI
    page ("Send your first trace"). Every top-level run calls it, so an experiment made by
    ``mlflow run --experiment-name`` or by the user gets the tag too."""
    tags = client.get_experiment(experiment_id).tags
    if tags.get(EXPERIMENT_KIND_TAG, "") in _UNCHOSEN_KINDS:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, TRAINING_EXPERIMENT_KIND)


#: MLflow UI's "share view" tags: ``<prefix><key>`` on the experiment holds a runs-page view state
#: (JSON) that the link ``...?viewStateShareKey=<key>`` opens.
SHARED_VIEW_TAG_PREFIX = "mlflow.sharedViewState."
#: ``mlflow ui``'s default address, for links printed when the tracking store is not a server.
LOCAL_UI = "http://127.0.0.1:5000"


def share_runs_view(client, experiment_id: str, key: str, metric_columns) -> str:
    """Share a runs-table view of the experiment whose columns are ``metric_columns`` (what the
    UI's "share" writes: the experiment tag ``mlflow.sharedViewState.<key>``) and return the link
    that opens it in the model-training view. MLflow 3.18's runs table shows no metric column
    until one is chosen, and its GenAI/training switch follows the link's ``workflowType`` (else
    the browser's last choice, GenAI at first), not the experiment's kind tag. The link's host is
    the tracking server's, else ``mlflow ui``'s default."""
    import mlflow

    columns = [f"metrics.`{name}`" for name in metric_columns]
    client.set_experiment_tag(experiment_id, f"{SHARED_VIEW_TAG_PREFIX}{key}",
                              json.dumps({"selectedColumns": columns}))
    uri = mlflow.get_tracking_uri()
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else LOCAL_UI
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={key}"


def _replaceable_name(name: str | None, stage: str) -> bool:
    """True for a name recsys may replace: none, the bare stage name, or one MLflow generated;
    False for one the user gave (``mlflow run --run-name``)."""
    return not name or name == stage or bool(_GENERATED_NAME.fullmatch(name))


def name_run(name: str) -> None:
    """Name the active run (tag ``mlflow.runName``, what the UI lists) by what it is, e.g.
    ``als explicit rank=10 reg_param=0.1``; jobs call it once their parameters are validated. A
    name the user gave (``mlflow run --run-name``) is kept."""
    import mlflow

    run = mlflow.active_run()
    if run is not None and _replaceable_name(run.info.run_name, run.data.tags.get(TAG_STAGE, "")):
        mlflow.set_tag(RUN_NAME_TAG, name)


@contextlib.contextmanager


def stage_run(stage: str, params: dict | None = None, run_name=None, tags: dict | None = None):
    """Start (or, under ``mlflow run``, resume) a run; record any error before re-raising.

    Inside another run (the ``main`` pipeline, a search) the new run is nested under it, in its
    experiment. A new top-level run goes to :func:`default_experiment_id`'s experiment (``recsys``
    unless the user chose one); a resumed one stays where ``mlflow run`` put it
    (``--experiment-name`` / ``--experiment-id``, else MLflow's ``Default``). The run is named
    ``run_name`` (default: the stage), also when resumed, unless ``mlflow run --run-name`` named it;
    :func:`name_run` refines the name. The
    stage tag and ``tags`` are given to ``start_run``, so a run never exists without them: a
    process killed right after creating it leaves a run that can still be found by its tags.
    """
    import mlflow

    active = mlflow.active_run()
    nested = active is not None
    if not nested:
        check_tracking_server()
    resumed = not nested and bool(os.environ.get("MLFLOW_RUN_ID"))
    all_tags = {TAG_STAGE: stage, TAG_VERSION: __version__, **(tags or {})}
    name = run_name or stage
    if resumed:  # `mlflow run` made the run, in the experiment it was given: it stays there
        experiment_id = None
        current = mlflow.MlflowClient().get_run(os.environ["MLFLOW_RUN_ID"]).info.run_name
        if not _replaceable_name(current, stage):
            name = None  # the user's `mlflow run --run-name`
    else:  # a nested run lives in its parent's experiment, whatever the environment says
        experiment_id = active.info.experiment_id if nested else default_experiment_id()
    with mlflow.start_run(run_name=name, experiment_id=experiment_id, nested=nested, tags=all_tags) as run:
        try:
            if not nested:
                mark_training_experiment(mlflow.MlflowClient(), run.info.experiment_id)
            if params:
                mlflow.log_params(params)
            yield run
        except BaseException as err:
            message = redact_secrets(f"{type(err).__name__}: {err}")
            with contextlib.suppress(Exception):
                mlflow.set_tag(TAG_ERROR, message[:4900])
                mlflow.log_text(message + "\n\n" + redact_secrets(traceback.format_exc()), ERROR_ARTIFACT)
            raise


@functools.cache
def _counted_spark_dataset():
    from mlflow.data.spark_dataset import SparkDataset

    class CountedSparkDataset(SparkDataset):
        """A SparkDataset whose profile is a row count known in advance: MLflow's own profile
        runs an approximate count (a Python-worker job over the data, up to 5 s)."""

        def __init__(self, *args, rows: int, **kwargs):
            super().__init__(*args, **kwargs)
            self._rows = rows

        @property
        def profile(self):
            return {"approx_count": self._rows}

    return CountedSparkDataset


def log_spark_input(df, *, path: str, name: str, digest: str, rows: int, context: str | None = None) -> None:
    """Log ``df`` (stored at ``path``, ``rows`` rows) as a dataset input of the active run."""
    import mlflow
    from mlflow.data.spark_dataset_source import SparkDatasetSource

    dataset = _counted_spark_dataset()(df=df, source=SparkDatasetSource(path=path), name=name,
                                       digest=digest, rows=rows)
    mlflow.log_input(dataset, context=context or name)


def log_json(obj, artifact_file: str) -> None:
    """Log ``obj`` as the JSON artifact ``artifact_file`` of the active run."""
    import mlflow

    mlflow.log_text(json.dumps(obj, indent=2, sort_keys=True, default=str), artifact_file)


def spark_session(spark_master: str | None, spark_conf):
    """The job's Spark session (:func:`recsys.core.spark.get_spark`); warns when a secret-looking
    ``--spark-conf`` key is given under ``mlflow run`` (which logs -P values in clear)."""
    from recsys.core.spark import get_spark

    keys = [pair.partition("=")[0].strip() for pair in spark_conf or ()]
    secret = [key for key in keys if SECRET_NAME.search(key)]
    if secret and os.environ.get("MLFLOW_RUN_ID"):
        say(f"[warning] --spark-conf {', '.join(secret)}: under `mlflow run`, MLflow records -P values as "
            "run params in clear; pass secrets through the environment or spark-defaults.conf")
    return get_spark(master=spark_master or None, conf=list(spark_conf or ()))


def temp_artifact_dir():
    """A temporary directory to write artifacts into before logging them."""
    return tempfile.TemporaryDirectory(prefix="recsys-artifacts-")


def log_new_params(params: dict) -> None:
    """Log params, skipping keys the run already has: under ``mlflow run`` MLflow has logged the
    raw entry-point values (``"true"``, ``"4"``), and MLflow refuses to change a param's text."""
    import mlflow

    run = mlflow.active_run()
    existing = mlflow.MlflowClient().get_run(run.info.run_id).data.params if run else {}
    mlflow.log_params({k: v for k, v in params.items() if k not in existing})


def trial_metrics(metrics: dict) -> dict:
    """What a search trial's run logs of its evaluation: ``metrics`` without
    :data:`~recsys.core.constants.SPLIT_ONLY_METRICS` (the same for every trial; the search's parent
    run has them), so the UI's compare page lists quality metrics, not counts."""
    return {k: v for k, v in metrics.items() if k not in SPLIT_ONLY_METRICS}


#: The folder of a logged Spark model that holds the ``PipelineModel`` (MLflow's spark flavor layout).
SPARK_MODEL_DATA = "sparkml"
SPARK_PIPELINE_CLASS = "pyspark.ml.pipeline.PipelineModel"


class _SparkFlavorFiles:
    """A flavor for ``mlflow.models.Model.log`` (public: it calls ``save_model`` of whatever it is
    given) writing MLflow's ``spark`` flavor layout for ``recommender``'s serving pipeline
    (``ALSRecommender.write_serving_model``): ``MLmodel`` (flavors ``spark`` and
    ``python_function``), ``sparkml/``, ``requirements.txt``, ``python_env.yaml``, ``conda.yaml``.

    ``mlflow.spark.log_model`` writes the same files, but it copies the model through the Spark
    driver's JVM (``_HadoopFileSystem``), which a Spark Connect client does not have. Here Spark
    writes the pipeline under :func:`recsys.core.fs.scratch_dir` (set ``RECSYS_SCRATCH`` when
    Spark's executors or a Connect server do not share this machine's disk) and pyarrow copies it
    here. The layout loads with ``mlflow.spark.load_model`` under classic Spark and with
    ``PipelineModel.load(<model>/sparkml)`` in both modes (:func:`loaded_spark_model`).

    ``validate``: load the written pipeline back with ``PipelineModel.load`` and score three pairs
    with it first (~1 s; a search's trials skip it: their code path is the same)."""

    __name__ = "spark"  # the logged model's flavor in MLflow's UI

    def __init__(self, recommender, fallback, validate: bool = True):
        self.recommender, self.fallback, self.validate = recommender, fallback, validate

    def _write_pipeline(self, local: str) -> None:
        import shutil

        from recsys.core import fs
        from recsys.core.constants import ITEM_COL
        from recsys.core.errors import RecsysError

        spark = self.recommender.model.userFactors.sparkSession
        scratch = fs.scratch_dir("model")
        try:
            self.recommender.write_serving_model(scratch, self.fallback)
            if self.validate:
                from pyspark.ml import PipelineModel

                pairs = spark.createDataFrame([(1, 1), (1, 2), (2, 3)], f"{USER_COL} long, {ITEM_COL} long")
                scored = PipelineModel.load(fs.to_uri(scratch)).transform(pairs).collect()
                if len(scored) != 3 or any(row["prediction"] is None for row in scored):
                    raise RecsysError(f"the written serving model at {scratch} scored {scored} for 3 pairs")
            os.makedirs(os.path.dirname(local), exist_ok=True)
            if fs.is_local(scratch):
                shutil.move(fs.local_path(scratch), local)  # a rename, or a copy across disks
            else:
                fs.rename(spark, fs.copy_to_local(spark, scratch, os.path.dirname(local)), local)
        finally:
            fs.delete(spark, scratch)

    def save_model(self, path, mlflow_model, signature=None, pip_requirements=(), input_example=None,
                   **_ignored):
        import platform

        import mlflow
        import pyspark
        import yaml

        self._write_pipeline(os.path.join(path, SPARK_MODEL_DATA))
        mlflow_model.signature = signature
        if input_example is not None:  # a pandas frame, in the MLmodel format's split orientation
            from mlflow.models import convert_input_example_to_serving_input

            with open(os.path.join(path, "input_example.json"), "w", encoding="utf-8") as fh:
                json.dump(json.loads(input_example.to_json(orient="split", index=False)), fh)
            with open(os.path.join(path, "serving_input_example.json"), "w", encoding="utf-8") as fh:
                fh.write(convert_input_example_to_serving_input(input_example))
            mlflow_model.saved_input_example_info = {
                "artifact_path": "input_example.json", "type": "dataframe", "pandas_orient": "split",
                "serving_input_path": "serving_input_example.json"}
        mlflow_model.add_flavor("spark", pyspark_version=pyspark.__version__, model_data=SPARK_MODEL_DATA,
                                code=None, model_class=SPARK_PIPELINE_CLASS)
        mlflow.pyfunc.add_to_model(mlflow_model, loader_module="mlflow.spark", data=SPARK_MODEL_DATA,
                                   conda_env="conda.yaml", python_env="python_env.yaml")
        mlflow_model.save(os.path.join(path, "MLmodel"))
        requirements = list(pip_requirements)
        with open(os.path.join(path, "requirements.txt"), "w", encoding="utf-8") as fh:
            fh.write("\n".join(requirements) + "\n")
        python = platform.python_version()
        with open(os.path.join(path, "python_env.yaml"), "w", encoding="utf-8") as fh:
            yaml.safe_dump({"python": python, "build_dependencies": ["pip", "setuptools", "wheel"],
                            "dependencies": ["-r requirements.txt"]}, fh, sort_keys=False)
        with open(os.path.join(path, "conda.yaml"), "w", encoding="utf-8") as fh:
            yaml.safe_dump({"name": "mlflow-env", "channels": ["conda-forge"],
                            "dependencies": [f"python={python}", "pip", {"pip": requirements}]}, fh,
                           sort_keys=False)


def _als_model_options() -> dict:
    """The signature and pip requirements of a logged ALS model: given, not inferred (inferring
    reloads the model in a subprocess: ~16 s per model)."""
    import mlflow
    import pandas as pd
    import pyspark
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from recsys.core.constants import ITEM_COL

    return {"signature": ModelSignature(inputs=Schema([ColSpec("long", USER_COL), ColSpec("long", ITEM_COL)]),
                                        outputs=Schema([ColSpec("double")])),
            "input_example": pd.DataFrame({USER_COL: [1, 1, 2], ITEM_COL: [1, 2, 3]}),
            "pip_requirements": [f"pyspark=={pyspark.__version__}", f"mlflow=={mlflow.__version__}"]}


def log_als_model(recommender, fallback, validate: bool = True, logged_model: bool = True) -> None:
    """Log ``recommender``'s serving pipeline as the model ``model`` of the active run, in MLflow's
    spark flavor layout (:class:`_SparkFlavorFiles`): ``mlflow.pyfunc.load_model`` under classic
    Spark (a pandas ``userId, movieId`` frame -> one double per row), :func:`loaded_spark_model`
    in both modes; ``runs:/<run>/model`` either way.

    ``logged_model``: an MLflow 3 logged model (``Model.log``: listed in the experiment's Models
    tab), else the same files as plain run artifacts under ``model/`` (a search's trials: the
    logged model's bookkeeping cost ~1 s per trial, measured in ``experiments/results/trial_overhead.md``)."""
    import mlflow
    from mlflow.models import Model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flavor = _SparkFlavorFiles(recommender, fallback, validate)
        if logged_model:
            # validate_serving_input=False: MLflow would reload the model through mlflow.spark's
            # JVM path; validate=True checks the written pipeline with PipelineModel.load instead
            Model.log(None, name=ALS_MODEL_ARTIFACT, flavor=flavor, validate_serving_input=False,
                      **_als_model_options())
            return
        run = mlflow.active_run()
        with temp_artifact_dir() as tmp:
            path = os.path.join(tmp, ALS_MODEL_ARTIFACT)
            flavor.save_model(path, Model(run_id=run.info.run_id, artifact_path=ALS_MODEL_ARTIFACT),
                              **_als_model_options())
            mlflow.log_artifacts(path, ALS_MODEL_ARTIFACT)


def save_als_model(recommender, fallback, path: str, validate: bool = True) -> None:
    """:func:`log_als_model`'s files, written to the new local folder ``path`` instead."""
    from mlflow.models import Model

    _SparkFlavorFiles(recommender, fallback, validate).save_model(path, Model(), **_als_model_options())


@contextlib.contextmanager
def loaded_spark_model(spark, model_dir: str):
    """The ``PipelineModel`` of a downloaded Spark-flavor MLflow model (``model_dir`` holds
    ``MLmodel``), loaded with ``PipelineModel.load`` (classic Spark and Spark Connect alike).
    With ``RECSYS_SCRATCH`` set, the model is first copied there, for executors or a Connect
    server that cannot read this machine's disk; the copy is deleted when the block ends
    (Spark reads the factor tables lazily, so use the model inside the block)."""
    from mlflow.models import Model
    from pyspark.ml import PipelineModel

    from recsys.core import fs

    data = os.path.join(model_dir, Model.load(model_dir).flavors["spark"]["model_data"])
    staged = fs.scratch_dir("model") if os.environ.get("RECSYS_SCRATCH") else None
    if staged:
        fs.copy_from_local(spark, data, staged)
    try:
        yield PipelineModel.load(fs.to_uri(staged or data))
    finally:
        if staged:
            fs.delete(spark, staged)


def log_recommender_model(recommender, train, *, kind, popularity, movies, fallback=None,
                          spark_model_dir=None, meta=None, name=RECOMMENDER_ARTIFACT):
    """Log the servable recommender (``recsys/recommend/serving.py``, a pyfunc "model from code": no pickle,
    no JVM to load or serve) as model ``name`` of the active run; returns MLflow's ``ModelInfo``.

    The arrays come from :func:`recsys.recommend.factors.export_factors` (same arguments; see it for
    ``kind``, ``fallback``, ``popularity``, ``movies``, ``meta``) and become the model's
    ``artifacts/factors``. ``spark_model_dir``: optional local directory holding a Spark-flavor
    MLflow model (e.g. the downloaded ``runs:/<trial>/model``), copied to
    ``artifacts/spark_model``, so the registered version keeps the Spark ALS model:
    ``mlflow.spark.load_model(<downloaded model dir>/artifacts/spark_model)``. The signature is
    ``recsys.recommend.serving.model_signature()`` (param ``k``, output columns); the MLmodel metadata
    ``recsys_inputs`` describes the request columns and ``recsys_factors`` holds the export counts.
    """
    import shutil
    from pathlib import Path

    import mlflow
    import numpy as np
    import pandas as pd
    import threadpoolctl

    from recsys.core.errors import RecsysError
    from recsys.recommend import serving
    from recsys.recommend.factors import export_factors

    if mlflow.active_run() is None:
        raise RecsysError("log_recommender_model: no active MLflow run; call it inside stage_run(...)")
    if spark_model_dir and not os.path.isfile(os.path.join(spark_model_dir, "MLmodel")):
        raise RecsysError(f"spark_model_dir {spark_model_dir} holds no MLmodel: not an MLflow model folder")
    with temp_artifact_dir() as tmp:
        # artifacts land under artifacts/<directory name>: the names below are the layout
        factors_dir = os.path.join(tmp, FACTORS_ARTIFACT)
        counts = export_factors(recommender, train, factors_dir, kind=kind, popularity=popularity,
                                movies=movies, fallback=fallback, meta=meta, progress=say)
        artifacts = {FACTORS_ARTIFACT: factors_dir}
        if spark_model_dir:
            artifacts[SPARK_MODEL_ARTIFACT] = shutil.copytree(spark_model_dir,
                                                              os.path.join(tmp, SPARK_MODEL_ARTIFACT))
        users = np.load(os.path.join(factors_dir, "user_ids.npy"), mmap_mode="r")
        example_user = int(users[0]) if users.shape[0] else 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return mlflow.pyfunc.log_model(
                name=name, python_model=str(Path(serving.__file__).resolve()), artifacts=artifacts,
                signature=serving.model_signature(),
                input_example=(pd.DataFrame({USER_COL: [example_user]}), {"k": 3}),
                pip_requirements=[f"mlflow=={mlflow.__version__}", f"numpy=={np.__version__}",
                                  f"pandas=={pd.__version__}", f"threadpoolctl=={threadpoolctl.__version__}"],
                metadata={"recsys_inputs": serving.INPUT_DOC, "recsys_kind": kind,
                          "recsys_factors": {key: n for key, n in counts.items() if key != "seconds"}})


def kill_stale_runs(client, experiment_id, key, parent_id):
    """Runs left RUNNING by a killed search of the same key, its trials and its parent run:
    mark them KILLED (the resumed search reruns those trials; this run is the parent now)."""
    stale = client.search_runs(
        [experiment_id], filter_string=f"tags.`{TAG_SEARCH_KEY}` = '{key}' and attributes.status = 'RUNNING'")
    for run in stale:
        if run.info.run_id != parent_id and run.data.tags.get(TAG_STAGE) in ("als_trial", "als_search"):
            client.set_terminated(run.info.run_id, "KILLED")


def _run_or_none(client, run_id):
    """The run, or None when this store has no run ``run_id`` (another store's id)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def find_trial_run(client, record, experiment_id) -> str | None:
    """The first of a search-state record's run ids (``run_id``, then ``other_run_ids``) that is
    a live run of ``experiment_id`` in this tracking store; None when there is none (the state
    was written against another store or experiment, or the run was deleted)."""
    for run_id in [record.get("run_id"), *record.get("other_run_ids", [])]:
        run = _run_or_none(client, run_id) if run_id else None
        if run and run.info.lifecycle_stage == "active" and run.info.experiment_id == experiment_id:
            return run_id
    return None


def restore_trial_run(client, experiment_id, parent_id, record, *, run_name, tags, params) -> str:
    """Re-log a finished trial from the search state as a child run of ``parent_id``; its id.

    The run gets ``tags`` plus the stage tag and ``recsys.restored_from_run_id`` (the trial's
    first run id), ``params``, the state's metrics as ``val_*`` (as a trial logs them:
    :func:`trial_metrics`) and ``trial_seconds``; it ends
    FINISHED, or FAILED with the recorded error in ``recsys.error``. Nothing is refitted: it has
    no model artifact.
    """
    import time

    from mlflow.entities import Metric, Param

    first = ([*record.get("other_run_ids", [])] or [record.get("run_id")])[-1] or ""
    all_tags = {"mlflow.parentRunId": parent_id, TAG_STAGE: "als_trial", TAG_VERSION: __version__,
                **tags, TAG_RESTORED_FROM: first}
    if record.get("status") != "ok":
        all_tags[TAG_ERROR] = redact_secrets(str(record.get("error") or "failed"))[:4900]
    run = client.create_run(experiment_id, run_name=run_name, tags=all_tags)
    now = int(time.time() * 1000)
    values = {**finite_metrics(trial_metrics(record.get("metrics") or {}), "val_"),
              "trial_seconds": float(record.get("seconds") or 0.0)}
    client.log_batch(run.info.run_id, metrics=[Metric(k, v, now, 0) for k, v in values.items()],
                     params=[Param(k, str(v)) for k, v in params.items()])
    client.set_terminated(run.info.run_id, "FINISHED" if record.get("status") == "ok" else "FAILED")
    return run.info.run_id


def adopt_trials(client, records, parent_id):
    """Trials finished under an earlier (interrupted) parent run move under this one, so the
    finished search shows all its trials; the old parent is kept in ``recsys.first_parent_run_id``.
    A record whose run this store does not have is left alone (see :func:`restore_trial_run`)."""
    for rec in records:
        if not rec.get("run_id"):
            continue
        run = _run_or_none(client, rec["run_id"])
        if run is None:
            continue
        old = run.data.tags.get("mlflow.parentRunId")
        if old != parent_id:
            client.set_tag(rec["run_id"], TAG_FIRST_PARENT_RUN, old or "")
            client.set_tag(rec["run_id"], "mlflow.parentRunId", parent_id)
