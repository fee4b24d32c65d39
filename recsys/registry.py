"""Registering and promoting ALS models in the MLflow Model Registry (aliases, not stages).

A *candidate* is the best trial of an ``als_search`` (or a run given by id that carries a
``model`` artifact and ``test_<objective>`` metrics). :func:`promote`:

1. registers ``runs:/<candidate>/model`` under ``model_name`` unless a version from that run
   already exists (so promoting the same run twice registers nothing new), and tags the version
   with the candidate's test and validation metrics, objective, feedback mode and split digest;
2. points ``@challenger`` at it;
3. moves ``@champion`` to it only when there is no champion yet, when ``force`` is given, or
   when its test metric beats the champion's by the search objective's direction (lower RMSE,
   higher precision/NDCG/MAP); the champion it replaces keeps ``@previous``. A champion judged
   on another split (different content digest) or lacking the metric is not comparable: the
   candidate stays challenger unless forced.

With ``jobs.py`` this is the only module that imports MLflow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from recsys.errors import RecsysError
from recsys.search import OBJECTIVES, Objective

DEFAULT_MODEL_NAME = "recsys-als"
CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
MODEL_ARTIFACT = "model"
#: Run tags written by the search and read here.
TAG_STAGE, TAG_BEST_RUN, TAG_OBJECTIVE = "recsys.stage", "recsys.best_run_id", "recsys.objective"
TAG_FEEDBACK, TAG_SPLIT = "recsys.feedback", "recsys.split_digest"


@dataclass
class Candidate:
    source_run_id: str
    model_run_id: str
    objective: Objective
    test_metrics: dict = field(default_factory=dict)
    val_metrics: dict = field(default_factory=dict)
    feedback: str = ""
    split_digest: str = ""
    params: dict = field(default_factory=dict)

    @property
    def score(self) -> float:
        return self.test_metrics[self.objective.metric]


def latest_search_run(client, experiment_id: str):
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{TAG_STAGE}` = 'als_search' and attributes.status = 'FINISHED'",
        order_by=["attributes.end_time DESC"], max_results=1)
    if not runs:
        raise RecsysError(f"no finished als_search run in experiment {experiment_id}: run "
                          "`mlflow run . -e als_search` first, or pass run_id")
    return runs[0]


def find_candidate(client, experiment_id: str, run_id: str = "") -> Candidate:
    """The model to promote: the best trial of ``run_id`` (an als_search run) or ``run_id``
    itself; default the latest finished als_search run of the experiment."""
    from mlflow.exceptions import MlflowException

    if run_id:
        try:
            source = client.get_run(run_id)
        except MlflowException as err:
            raise RecsysError(f"run_id={run_id!r}: no such run in the tracking store") from err
    else:
        source = latest_search_run(client, experiment_id)
    best = source.data.tags.get(TAG_BEST_RUN)
    model_run = client.get_run(best) if best else source
    name = model_run.data.tags.get(TAG_OBJECTIVE) or source.data.tags.get(TAG_OBJECTIVE)
    if name not in OBJECTIVES:
        raise RecsysError(f"run {source.info.run_id} has no {TAG_OBJECTIVE} tag: promote an als_search "
                          "run (or its best trial)")
    objective = Objective(name, OBJECTIVES[name])
    metrics = model_run.data.metrics
    test = {k[5:]: v for k, v in metrics.items() if k.startswith("test_")}
    if objective.metric not in test or not math.isfinite(test[objective.metric]):
        raise RecsysError(f"run {model_run.info.run_id} has no test_{objective.metric} metric: only the "
                          "best model of an als_search is evaluated on the test set")
    return Candidate(
        source_run_id=source.info.run_id, model_run_id=model_run.info.run_id, objective=objective,
        test_metrics=test, val_metrics={k[4:]: v for k, v in metrics.items() if k.startswith("val_")},
        feedback=model_run.data.tags.get(TAG_FEEDBACK, ""),
        split_digest=model_run.data.tags.get(TAG_SPLIT, ""), params=dict(model_run.data.params))


def _alias_version(client, name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def register(client, candidate: Candidate, model_name: str):
    """``(version, created)``: the version holding the candidate's model, registered if needed."""
    import mlflow

    existing = client.search_model_versions(f"name='{model_name}' and run_id='{candidate.model_run_id}'")
    if existing:
        return min(existing, key=lambda v: int(v.version)), False
    version = mlflow.register_model(f"runs:/{candidate.model_run_id}/{MODEL_ARTIFACT}", model_name)
    tags = {f"test_{k}": repr(float(v)) for k, v in candidate.test_metrics.items()}
    tags.update({f"val_{k}": repr(float(v)) for k, v in candidate.val_metrics.items()})
    tags.update({f"param_{k}": v for k, v in candidate.params.items()})
    tags.update({TAG_OBJECTIVE: candidate.objective.metric, TAG_FEEDBACK: candidate.feedback,
                 TAG_SPLIT: candidate.split_digest, "recsys.source_run_id": candidate.source_run_id})
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version.version, key, str(value))
    return client.get_model_version(model_name, version.version), True


def promote(client, candidate: Candidate, model_name: str = DEFAULT_MODEL_NAME, force: bool = False) -> dict:
    """Register the candidate, set ``@challenger``, move ``@champion`` by the rules above.

    Returns ``model_name, version, registered, decision`` (``promoted``, ``kept`` or
    ``already_champion``), ``reason``, ``candidate_score``, ``champion_version``,
    ``champion_score``, ``previous_version``.
    """
    if not model_name or not str(model_name).strip():
        raise RecsysError("model_name must be a non-empty registered model name, e.g. recsys-als")
    version, created = register(client, candidate, model_name)
    champion = _alias_version(client, model_name, CHAMPION)
    metric = candidate.objective.metric
    out = {"model_name": model_name, "version": int(version.version), "registered": created,
           "objective": metric, "direction": candidate.objective.direction,
           "candidate_score": candidate.score, "champion_version": None, "champion_score": None,
           "previous_version": None}
    if champion is not None:
        out["champion_version"] = int(champion.version)
        raw = champion.tags.get(f"test_{metric}")
        out["champion_score"] = float(raw) if raw is not None else None
    if champion is not None and champion.version == version.version:
        return {**out, "decision": "already_champion", "reason": f"version {version.version} is the champion"}

    client.set_registered_model_alias(model_name, CHALLENGER, version.version)
    if champion is None:
        promote_it, reason = True, "no champion yet"
    elif force:
        promote_it, reason = True, "forced"
    elif out["champion_score"] is None:
        promote_it, reason = False, (f"champion v{champion.version} has no test_{metric}: not comparable "
                                     "(force to override)")
    elif champion.tags.get(TAG_SPLIT, "") != candidate.split_digest:
        promote_it, reason = False, (f"champion v{champion.version} was tested on another split: not "
                                     "comparable (force to override)")
    else:
        promote_it = candidate.objective.better(candidate.score, out["champion_score"])
        verb = "beats" if promote_it else "does not beat"
        reason = (f"test {metric} {candidate.score:.5f} {verb} champion v{champion.version}'s "
                  f"{out['champion_score']:.5f} ({candidate.objective.direction}imise)")
    if not promote_it:
        return {**out, "decision": "kept", "reason": reason}
    if champion is not None:
        client.set_registered_model_alias(model_name, PREVIOUS, champion.version)
        out["previous_version"] = int(champion.version)
    client.set_registered_model_alias(model_name, CHAMPION, version.version)
    return {**out, "decision": "promoted", "reason": reason}
