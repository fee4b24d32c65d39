"""Registering and promoting ALS models in the MLflow Model Registry (aliases, not stages).

Two model roles, two registered names (:func:`default_model_name`): ``recsys-als`` is the
recommender, judged by a ranking objective (precision/NDCG/MAP at K), and
``recsys-als-ratings`` the rating predictor, judged by RMSE. A name holds models judged by one
metric only: a candidate whose objective differs from the champion's is refused with an error
naming both metrics (comparing them would be meaningless), whatever ``force`` says.

A *candidate* is the best trial of an ``als_search`` (or a run given by id that carries a model
and ``test_<objective>`` metrics). Its search logged the baseline on the same split
(``baseline_test_<objective>``: popularity for ranking metrics, the bias baseline for RMSE).
:func:`promote`:

1. registers the candidate's model (the served top-K pyfunc its search logged, found by the
   run tag ``recsys.recommender_uri``, else ``runs:/<candidate>/model``) under ``model_name`` unless a version
   from that run already exists (so promoting the same run twice registers nothing new), and tags
   the version with what the promotion rules read and a reader wants at a glance:
   ``test_<objective>``, ``baseline_test_<objective>``, ``recsys.objective``, ``recsys.feedback``,
   ``recsys.split_digest``, ``recsys.source_run_id`` (the run's params and metrics stay on its run);
2. points ``@challenger`` at it;
3. moves ``@champion`` to it only when its test metric beats the baseline's on the same split
   **and** either there is no champion yet or it beats the champion's test metric, by the
   objective's direction (lower RMSE, higher precision/NDCG/MAP); ``force`` skips both gates. The
   champion it replaces keeps ``@previous``. A champion judged on another split (different
   content digest) or lacking the metric is not comparable: the candidate stays challenger
   unless forced;
4. records the decision: the version's tag ``decision`` (``promoted``, ``kept``,
   ``already_champion``; a champion it replaces becomes ``replaced``) and its description, a few
   lines in words (the decision and why, the scores against the baseline and the champion, the
   source runs); and, when the decision is made by a run (``promote_run_id``, the ``promote``
   entry point's run), the row of :data:`HISTORY_COLUMNS` as that run's tags and metrics.
   :func:`promotion_history` reads those rows back from every promote run of the model: the
   ``promote`` job logs the table as ``promotion_history.csv``. Nothing is kept in
   registered-model tags, which the model page shows unformatted.

Concurrent promotions of one model are serialised by a lock (see :func:`promotion_lock`):
without it, two promotions that both read the same ``@champion`` could each move it, the last
writer winning even when its model is worse, and two promotions of the same run could both
register a version.

With ``jobs.py`` and ``tracking.py`` this is the only module that imports MLflow.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import time
from dataclasses import dataclass, field

from recsys.core.constants import (
    ALS_MODEL_ARTIFACT,
    RECOMMENDER_ARTIFACT,
    RECOMMENDER_META,
    RECOMMENDER_SPARK_MODEL,
    RMSE,
    SPLIT_ONLY_METRICS,
    TAG_BEST_RUN,
    TAG_DECISION,
    TAG_DECISION_REASON,
    TAG_DECISION_TIME,
    TAG_FEEDBACK,
    TAG_FORCED,
    TAG_MODEL_RUN,
    TAG_OBJECTIVE,
    TAG_PROMOTED_MODEL,
    TAG_RECOMMENDER_URI,
    TAG_SOURCE_RUN,
    TAG_SPLIT,
    TAG_STAGE,
    VERSION_DECISION_TAG,
)
from recsys.core.errors import RecsysError
from recsys.core.metrics import OBJECTIVES, Objective

#: The recommender (ranked lists, ranking objective) and the rating predictor (RMSE).
RANKING_MODEL_NAME, RATING_MODEL_NAME = "recsys-als", "recsys-als-ratings"
DEFAULT_MODEL_NAME = RANKING_MODEL_NAME
CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
HISTORY_COLUMNS = ("time", "model_name", "version", "decision", "reason", "objective", "direction",
                   "candidate_score", "champion_version", "champion_score", "baseline_score", "forced",
                   "source_run_id", "model_run_id", "promote_run_id")
#: Registered model that exists only while a promotion of ``<name>`` runs (see promotion_lock).
LOCK_SUFFIX = ".promote-lock"
#: A lock without a heartbeat for this long is a leftover of a killed promotion and is broken.
LOCK_STALE_SECONDS = 600
#: How often the holder renews the lock's heartbeat.
LOCK_HEARTBEAT_SECONDS = 30.0
TAG_LOCK_OWNER, TAG_LOCK_HEARTBEAT = "recsys.lock.owner", "recsys.lock.heartbeat"
#: Registered model names: letters, digits, ``.``, ``_``, ``-``; MLflow stores may turn them into
#: paths (file registry, artifact locations), so nothing that can climb out of a directory.
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
#: MLflow's own run id rule; checked here to name the parameter in a one-line error.
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,255}$")


def default_model_name(objective: str) -> str:
    """The registered name for a model judged by ``objective``: RMSE -> the rating predictor,
    a ranking metric -> the recommender."""
    return RATING_MODEL_NAME if objective == "rmse" else RANKING_MODEL_NAME


def check_model_name(model_name) -> str:
    """``model_name`` if it is a safe registered model name, else a RecsysError naming it."""
    name = str(model_name or "").strip()
    if not name:
        raise RecsysError("model_name must be a non-empty registered model name, e.g. recsys-als")
    if not _MODEL_NAME.match(name) or ".." in name or name.endswith(LOCK_SUFFIX):
        raise RecsysError(f"model_name={model_name!r} is not allowed: use letters, digits, '.', '_' "
                          f"and '-' (no '..', no '/', not ending in {LOCK_SUFFIX}), e.g. recsys-als")
    return name


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
    #: The baseline's test metric on the same split (None when the search did not log it).
    baseline_score: float | None = None
    #: The model that gets registered (default: the run's Spark model).
    model_uri: str = ""

    def __post_init__(self):
        self.model_uri = self.model_uri or f"runs:/{self.model_run_id}/{ALS_MODEL_ARTIFACT}"

    @property
    def score(self) -> float:
        return self.test_metrics[self.objective.metric]


def latest_search_run(client, experiment_id: str):
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{TAG_STAGE}` = 'als_search' and attributes.status = 'FINISHED'",
        order_by=["attributes.end_time DESC"], max_results=1)
    if not runs:
        name = client.get_experiment(experiment_id).name
        raise RecsysError(f"no finished als_search run in experiment {name!r} (id {experiment_id}): run "
                          "`mlflow run . -e als_search` first, promote in the search's experiment "
                          "(MLFLOW_EXPERIMENT_NAME, `mlflow run --experiment-name`), or pass run_id")
    return runs[0]


def find_candidate(client, experiment_id: str, run_id: str = "") -> Candidate:
    """The model to promote: the best trial of ``run_id`` (an als_search run) or ``run_id``
    itself; default the latest finished als_search run of the experiment."""
    from mlflow.exceptions import MlflowException

    if run_id:
        if not _RUN_ID.match(str(run_id)):
            raise RecsysError(f"run_id={run_id!r} is not an MLflow run id (letters, digits, '_', '-')")
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
    if model_run is not source:  # a trial: the counts every trial shares are on its search run
        shared = {f"{part}_{key}" for part in ("val", "test") for key in SPLIT_ONLY_METRICS}
        metrics = {**{k: v for k, v in source.data.metrics.items() if k in shared}, **metrics}
    test = {k[5:]: v for k, v in metrics.items() if k.startswith("test_")}
    if objective.metric not in test or not math.isfinite(test[objective.metric]):
        raise RecsysError(f"run {model_run.info.run_id} has no test_{objective.metric} metric: only the "
                          "best model of an als_search is evaluated on the test set")
    baseline = source.data.metrics.get(f"baseline_test_{objective.metric}")
    if baseline is not None and not math.isfinite(baseline):
        baseline = None
    return Candidate(
        source_run_id=source.info.run_id, model_run_id=model_run.info.run_id, objective=objective,
        test_metrics=test, val_metrics={k[4:]: v for k, v in metrics.items() if k.startswith("val_")},
        feedback=model_run.data.tags.get(TAG_FEEDBACK, ""),
        split_digest=model_run.data.tags.get(TAG_SPLIT, ""), params=dict(model_run.data.params),
        baseline_score=baseline, model_uri=model_run.data.tags.get(TAG_RECOMMENDER_URI, ""))


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
    version = mlflow.register_model(candidate.model_uri, model_name)
    _describe_model(client, model_name, candidate.objective.metric)
    metric = candidate.objective.metric
    tags = {f"test_{metric}": repr(float(candidate.score)), TAG_OBJECTIVE: metric,
            TAG_FEEDBACK: candidate.feedback, TAG_SPLIT: candidate.split_digest,
            TAG_SOURCE_RUN: candidate.source_run_id}
    if candidate.baseline_score is not None:
        tags[f"baseline_test_{metric}"] = repr(float(candidate.baseline_score))
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version.version, key, str(value))
    return client.get_model_version(model_name, version.version), True


def baseline_name(objective: str) -> str:
    """What a candidate judged by ``objective`` must beat: the bias baseline for RMSE, popularity
    (by rating count) for a ranking metric."""
    return "bias baseline" if objective == RMSE else "popularity baseline"


def _describe_model(client, model_name: str, objective: str) -> None:
    """Give a registered model without a description one (the model page's first lines)."""
    if client.get_registered_model(model_name).description:
        return
    role = ("Rating predictor: explicit ALS" if objective == RMSE
            else "Top-K movie recommender: ALS")
    client.update_registered_model(model_name, description=(
        f"{role}, judged by test `{objective}` against the {baseline_name(objective)} on the same "
        f"split. `@champion` is the version in use (`mlflow models serve -m models:/{model_name}@champion`); "
        "each version's description says why it was promoted or kept, and every `promote` run "
        "logs the model's whole decision history as `promotion_history.csv`."))


@contextlib.contextmanager
def promotion_lock(client, model_name: str, timeout: float = 120.0, poll: float = 0.2):
    """Hold an exclusive lock on promoting ``model_name`` across processes and machines.

    MLflow has no compare-and-set on aliases, but creating a registered model is atomic (its
    name is unique in every store: sqlite, PostgreSQL, a tracking server), so the lock is the
    registered model ``<model_name>.promote-lock``:

    - **taking** it creates it, tagged with a random owner token (``recsys.lock.owner``) and a
      heartbeat time (``recsys.lock.heartbeat``);
    - **holding** it: a daemon thread renews the heartbeat every ``LOCK_HEARTBEAT_SECONDS``, so a
      promotion that runs long is never taken for a dead one;
    - **breaking** it: a lock whose heartbeat is older than ``LOCK_STALE_SECONDS`` was left by a
      killed promotion. A waiter breaks it only after creating ``<lock>.break-<owner token>``
      (atomic: of all the waiters that saw the same dead lock, exactly one breaks it), and only
      if the lock still carries that owner when read again; it then deletes the breaker;
    - **releasing** deletes the lock only if it still carries this holder's token.

    The one case left open needs the holder's whole process frozen past ``LOCK_STALE_SECONDS``
    (heartbeat thread included) and waking in the instant between a breaker's check and delete.
    """
    import threading
    import uuid

    from mlflow.exceptions import MlflowException

    lock = f"{model_name}{LOCK_SUFFIX}"
    token = uuid.uuid4().hex
    deadline = time.time() + timeout
    while True:
        try:
            client.create_registered_model(
                lock, tags={TAG_LOCK_OWNER: token, TAG_LOCK_HEARTBEAT: repr(time.time())},
                description=f"held while recsys promotes {model_name}; delete it if no promotion is running")
            break
        except MlflowException as err:
            # on a name clash some stores look the holder up, which fails if it was just released:
            # not taken either way, try again
            if getattr(err, "error_code", "") not in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                raise
        _break_if_dead(client, lock)
        if time.time() > deadline:
            raise RecsysError(f"model_name={model_name}: another promotion has held the lock {lock} "
                              f"for over {timeout:.0f}s; if none is running, delete the registered "
                              f"model {lock} (and any {lock}.break-*)")
        time.sleep(poll)
    stop = threading.Event()

    def beat():
        while not stop.wait(LOCK_HEARTBEAT_SECONDS):
            with contextlib.suppress(Exception):  # a missed beat is retried; 20 in a row would be fatal
                client.set_registered_model_tag(lock, TAG_LOCK_HEARTBEAT, repr(time.time()))

    heart = threading.Thread(target=beat, name=f"recsys-lock-{model_name}", daemon=True)
    heart.start()
    try:
        yield
    finally:
        stop.set()
        heart.join()
        with contextlib.suppress(MlflowException):
            if client.get_registered_model(lock).tags.get(TAG_LOCK_OWNER) == token:
                client.delete_registered_model(lock)


def _lock_age(held) -> float:
    """Seconds since the lock's last heartbeat (its creation when it has none)."""
    try:
        beat = float(held.tags[TAG_LOCK_HEARTBEAT])
    except (KeyError, TypeError, ValueError):
        beat = held.creation_timestamp / 1000
    return time.time() - beat


def _lock_owner(held) -> str:
    """The holder's token (a lock made before tokens: its creation time)."""
    return held.tags.get(TAG_LOCK_OWNER, str(held.creation_timestamp))


def _break_if_dead(client, lock: str) -> None:
    """Delete ``lock`` if its holder is dead (see :func:`promotion_lock`), as the one waiter
    that wins the breaker for that holder."""
    from mlflow.exceptions import MlflowException

    try:
        held = client.get_registered_model(lock)
    except MlflowException:  # released meanwhile
        return
    if _lock_age(held) <= LOCK_STALE_SECONDS:
        return
    owner = _lock_owner(held)
    breaker = f"{lock}.break-{owner}"
    try:
        client.create_registered_model(breaker, description=f"recsys is breaking the dead lock {lock}")
    except MlflowException:  # another waiter breaks this one
        return
    try:
        again = client.get_registered_model(lock)
        if _lock_owner(again) == owner and \
                _lock_age(again) > LOCK_STALE_SECONDS:
            client.delete_registered_model(lock)
    except MlflowException:
        pass
    finally:
        with contextlib.suppress(MlflowException):
            client.delete_registered_model(breaker)


def promote(client, candidate: Candidate, model_name: str | None = None, force: bool = False,
            promote_run_id: str = "") -> dict:
    """Register the candidate, set ``@challenger``, move ``@champion`` by the rules above and
    record the decision in the history, all under :func:`promotion_lock`, so concurrent
    promotions act one after the other.

    ``model_name``: default :func:`default_model_name` of the candidate's objective.
    ``promote_run_id``: the run that made the decision; the history row is written on it (none
    without it).
    Returns a dict with the keys of :data:`HISTORY_COLUMNS` plus ``registered``.
    """
    model_name = check_model_name(model_name or default_model_name(candidate.objective.metric))
    with promotion_lock(client, model_name):
        out = _promote_locked(client, candidate, model_name, bool(force))
        _record(client, {**out, "promote_run_id": promote_run_id})
    return out


def _champion_objective(champion) -> str | None:
    return champion.tags.get(TAG_OBJECTIVE) if champion is not None else None


def _decide(candidate: Candidate, champion, champion_score, force: bool) -> tuple[bool, str]:
    """``(make champion?, reason)``: the baseline gate, then the champion gate."""
    metric, direction = candidate.objective.metric, candidate.objective.direction
    if force:
        return True, "forced"
    baseline = candidate.baseline_score
    if baseline is None:
        return False, (f"no baseline_test_{metric} on the candidate's search: not comparable with the "
                       "baseline (force to override)")
    if not candidate.objective.better(candidate.score, baseline):
        return False, (f"test {metric} {candidate.score:.5f} does not beat the baseline's {baseline:.5f} "
                       f"on the same split ({direction}imise)")
    beats_baseline = f"beats the baseline's {baseline:.5f}"
    if champion is None:
        return True, f"no champion yet; test {metric} {candidate.score:.5f} {beats_baseline}"
    if champion_score is None:
        return False, f"champion v{champion.version} has no test_{metric}: not comparable (force to override)"
    if champion.tags.get(TAG_SPLIT, "") != candidate.split_digest:
        return False, (f"champion v{champion.version} was tested on another split: not comparable "
                       "(force to override)")
    wins = candidate.objective.better(candidate.score, champion_score)
    verb = "beats" if wins else "does not beat"
    return wins, (f"test {metric} {candidate.score:.5f} {verb} champion v{champion.version}'s "
                  f"{champion_score:.5f} and {beats_baseline} ({direction}imise)")


def _promote_locked(client, candidate: Candidate, model_name: str, force: bool) -> dict:
    metric = candidate.objective.metric
    champion = _alias_version(client, model_name, CHAMPION)
    judged_by = _champion_objective(champion)
    if judged_by and judged_by != metric:
        usual = default_model_name(metric)
        where = f"{usual} (the name for {metric})" if usual != model_name else "another model_name"
        raise RecsysError(
            f"model_name={model_name}: the candidate is judged by {metric} but champion v{champion.version} "
            f"by {judged_by}; models judged by different metrics are never compared. Promote it under "
            f"{where}")
    version, created = register(client, candidate, model_name)
    out = {"time": _now(), "model_name": model_name,
           "version": int(version.version), "registered": created, "objective": metric,
           "direction": candidate.objective.direction, "candidate_score": candidate.score,
           "champion_version": None, "champion_score": None, "baseline_score": candidate.baseline_score,
           "previous_version": None, "forced": force, "source_run_id": candidate.source_run_id,
           "model_run_id": candidate.model_run_id}
    if champion is not None:
        out["champion_version"] = int(champion.version)
        raw = champion.tags.get(f"test_{metric}")
        out["champion_score"] = float(raw) if raw is not None else None
    if champion is not None and champion.version == version.version:
        return {**out, "decision": "already_champion", "reason": f"version {version.version} is the champion"}

    client.set_registered_model_alias(model_name, CHALLENGER, version.version)
    promote_it, reason = _decide(candidate, champion, out["champion_score"], force)
    if not promote_it:
        return {**out, "decision": "kept", "reason": reason}
    if champion is not None:
        client.set_registered_model_alias(model_name, PREVIOUS, champion.version)
        out["previous_version"] = int(champion.version)
    client.set_registered_model_alias(model_name, CHAMPION, version.version)
    return {**out, "decision": "promoted", "reason": reason}


def _now() -> str:
    """UTC time to the millisecond, ISO 8601: history rows sort by it."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


def _fmt(value) -> str:
    return "none" if value is None else f"{float(value):.4f}"


def describe_decision(decision: dict, params: dict | None = None) -> str:
    """A version's description after ``decision`` (a :func:`promote` result): a few markdown
    lines saying what was decided and why, the test scores against the baseline (and the
    champion it was compared with), and where the model came from."""
    metric, name = decision["objective"], baseline_name(decision["objective"])
    score, baseline = decision["candidate_score"], decision["baseline_score"]
    # plain words first: the model page's versions table shows the start of this, unrendered
    headline = {"promoted": "Champion", "kept": "Not promoted (stays @challenger)"}[decision["decision"]]
    if decision.get("forced"):
        headline += " (forced: the baseline and champion gates were skipped)"
    compared = (f" and champion v{decision['champion_version']}'s {_fmt(decision['champion_score'])}"
                if decision.get("champion_version") is not None else " (no champion before)")
    lines = [f"{headline}: test {metric} **{_fmt(score)}** against the {name}'s {_fmt(baseline)}{compared}; "
             f"decided {decision['time']}.", "", f"- Why: {decision['reason']}."]
    if params:
        shown = ", ".join(f"{key}={value}" for key, value in sorted(params.items())
                          if key not in ("k", "relevance_threshold"))
        lines.append(f"- Model: ALS {shown}.")
    source = (f"- Source: best trial run `{decision['model_run_id']}` of search run "
              f"`{decision['source_run_id']}`")
    if decision.get("promote_run_id"):
        source += f"; decided by promote run `{decision['promote_run_id']}`"
    lines.append(source + ".")
    return "\n".join(lines)


def _record(client, decision: dict) -> None:
    """Write ``decision`` down: the version's ``decision`` tag and description (a champion it
    replaced is marked ``replaced``), and the history row on the promote run, if any."""
    from mlflow.entities import Metric, RunTag

    name, version = decision["model_name"], str(decision["version"])
    client.set_model_version_tag(name, version, VERSION_DECISION_TAG, decision["decision"])
    if decision["decision"] != "already_champion":  # its description already says why
        params = {}
        with contextlib.suppress(Exception):  # words only: never fail a promotion for them
            params = client.get_run(decision["model_run_id"]).data.params
        client.update_model_version(name, version, description=describe_decision(decision, params))
    previous = decision.get("previous_version")
    if previous is not None:
        old = client.get_model_version(name, str(previous))
        client.set_model_version_tag(name, str(previous), VERSION_DECISION_TAG, "replaced")
        client.update_model_version(name, str(previous), description=(
            f"Replaced as champion by v{version} on {decision['time']} (now @previous).\n\n"
            + (old.description or "")))
    run_id = decision.get("promote_run_id")
    if not run_id:
        return
    metric, now = decision["objective"], int(time.time() * 1000)
    tags = {TAG_DECISION: decision["decision"], TAG_DECISION_REASON: decision["reason"][:4000],
            TAG_DECISION_TIME: decision["time"], TAG_PROMOTED_MODEL: name, TAG_OBJECTIVE: metric,
            TAG_SOURCE_RUN: decision["source_run_id"], TAG_MODEL_RUN: decision["model_run_id"],
            TAG_FORCED: str(bool(decision["forced"])).lower()}
    metrics = {"model_version": decision["version"], "champion_version": decision["champion_version"],
               f"candidate_test_{metric}": decision["candidate_score"],
               f"champion_test_{metric}": decision["champion_score"],
               f"baseline_test_{metric}": decision["baseline_score"]}
    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()],
                     metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None])


def _all_experiment_ids(client) -> list[str]:
    ids, token = [], None
    while True:
        page = client.search_experiments(max_results=1000, page_token=token)
        ids += [e.experiment_id for e in page]
        token = page.token
        if not token:
            return ids


def promotion_history(client, model_name: str):
    """Every recorded promotion decision of ``model_name``, oldest first, as a pandas DataFrame
    with the columns :data:`HISTORY_COLUMNS` (empty when there is none): one row per promote run
    of the model in any active experiment of this store (see :func:`promote`)."""
    import pandas as pd

    name = check_model_name(model_name)
    ids, runs = _all_experiment_ids(client), []
    for start in range(0, len(ids), 100):  # a bounded list per request
        token = None
        while True:
            page = client.search_runs(ids[start:start + 100], f"tags.`{TAG_PROMOTED_MODEL}` = '{name}'",
                                      max_results=1000, page_token=token)
            runs += list(page)
            token = page.token
            if not token:
                break
    rows = []
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        metric = tags.get(TAG_OBJECTIVE, "")
        champion = metrics.get("champion_version")
        rows.append({"time": tags.get(TAG_DECISION_TIME, ""), "model_name": name,
                     "version": int(metrics.get("model_version", 0)), "decision": tags.get(TAG_DECISION),
                     "reason": tags.get(TAG_DECISION_REASON), "objective": metric,
                     "direction": OBJECTIVES.get(metric),
                     "candidate_score": metrics.get(f"candidate_test_{metric}"),
                     "champion_version": int(champion) if champion is not None else None,
                     "champion_score": metrics.get(f"champion_test_{metric}"),
                     "baseline_score": metrics.get(f"baseline_test_{metric}"),
                     "forced": tags.get(TAG_FORCED) == "true", "source_run_id": tags.get(TAG_SOURCE_RUN),
                     "model_run_id": tags.get(TAG_MODEL_RUN), "promote_run_id": run.info.run_id})
    rows.sort(key=lambda row: row["time"])
    return pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))


# ---------------------------------------------------------------- the served recommender


def resolve_recommender(client, model_uri: str) -> tuple[str, dict]:
    """``model_uri`` -> (URI to download, ``{model_name, model_version, model_run_id}``).

    Accepts ``models:/<name>@<alias>``, ``models:/<name>/<version>``, ``runs:/<run id>/<path>``
    or a bare run id (its ``recommender`` artifact). An alias is pinned to the version it names
    now, so the whole job reads one model. A missing model, version, alias or run is a
    :class:`RecsysError` naming it.
    """
    from mlflow.exceptions import MlflowException

    uri = (model_uri or "").strip()
    try:
        if uri.startswith("models:/"):
            rest = uri[len("models:/"):]
            if "@" in rest:
                name, alias = rest.split("@", 1)
                version = client.get_model_version_by_alias(name, alias)
            elif "/" in rest and rest.rsplit("/", 1)[1].isdigit():
                name, number = rest.rsplit("/", 1)
                version = client.get_model_version(name, number)
            else:
                raise RecsysError(f"model_uri={model_uri!r}: give models:/<name>@<alias> or "
                                  "models:/<name>/<version>")
            info = {"model_name": name, "model_version": str(version.version),
                    "model_run_id": version.run_id or ""}
            return f"models:/{name}/{version.version}", info
        if uri.startswith("runs:/"):
            run_id = uri[len("runs:/"):].split("/", 1)[0]
        elif re.fullmatch(r"[0-9a-f]{32}", uri):
            run_id, uri = uri, f"runs:/{uri}/{RECOMMENDER_ARTIFACT}"
        else:
            raise RecsysError(f"model_uri={model_uri!r} is not a model URI: give models:/<name>@<alias>, "
                              "models:/<name>/<version>, runs:/<run id>/<path> or a run id")
        client.get_run(run_id)
        return uri, {"model_name": "", "model_version": "", "model_run_id": run_id}
    except MlflowException as err:
        raise RecsysError(f"model_uri={model_uri!r}: not found in the MLflow registry/tracking store "
                          f"{client.tracking_uri}: {err.message}") from err


def download_recommender(download_uri: str, model_uri: str, local_dir: str) -> tuple[str, dict]:
    """Download the model; return (local Spark model dir, meta dict). Checks the layout."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        root = mlflow.artifacts.download_artifacts(artifact_uri=download_uri, dst_path=local_dir)
    except MlflowException as err:
        raise RecsysError(f"model_uri={model_uri!r}: could not download {download_uri}: "
                          f"{err.message}") from err
    spark_dir, meta_path = os.path.join(root, RECOMMENDER_SPARK_MODEL), os.path.join(root, RECOMMENDER_META)
    if not os.path.isdir(spark_dir) or not os.path.isfile(meta_path):
        raise RecsysError(f"model_uri={model_uri!r} is not a recsys recommender: it has no "
                          f"{RECOMMENDER_SPARK_MODEL}/ and {RECOMMENDER_META}")
    with open(meta_path, encoding="utf-8") as fh:
        meta = json.load(fh)
    missing = [key for key in ("split_dir", "split_digest", "kind") if key not in meta]
    if missing:
        raise RecsysError(f"model_uri={model_uri!r}: {RECOMMENDER_META} lacks {', '.join(missing)}")
    return spark_dir, meta
