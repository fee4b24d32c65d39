"""TPE search over ALS hyper-parameters (Hyperopt, or Optuna): space as data, one objective, resumable.

- **Space**: ``default_space.yaml`` (shipped in this package; ``space=default``) holds one
  section per feedback mode (``explicit``, ``implicit``); each dimension names an ``ALSConfig``
  field and a distribution (``loguniform``, ``qloguniform``, ``uniform``, ``quniform``) with
  bounds in natural units.
- **Objective**: :class:`Objective` pairs a metric key with its direction; the same object turns
  metrics into Hyperopt's loss *and* picks the best trial, so they can never disagree.
- **Sequential** ``hyperopt.Trials``, not ``SparkTrials``: every trial is an ALS fit that is
  already distributed over the whole cluster; ``SparkTrials`` would run trials inside Spark
  tasks, i.e. nest Spark jobs inside a Spark job (not possible from executors) and fight the
  fits for the same cores.
- **Resumable**: after each trial the state (every finished trial's sampled values, loss,
  status, metrics, run id) is written as JSON next to the split
  (``<split_dir>/_searches/<key>/state.json``, ``key`` = hash of everything that defines the
  search except ``max_evals``). A rerun rebuilds the ``Trials`` from it and continues. TPE's
  seed for trial ``i`` is drawn from ``numpy.random.default_rng([seed, i])``, so a suggestion
  depends only on the seed, its index and the trials before it: an interrupted and resumed
  search proposes exactly what an uninterrupted one would. Raising ``max_evals`` extends a
  finished search; a search with ``max_evals=n`` is always judged on its first ``n`` trials.
- **Resumable on any tracking store**: the state outlives the store its runs were logged to
  (another ``MLFLOW_TRACKING_URI``, a deleted ``mlflow.db``, another experiment). ``run_search``
  hands every finished trial of the state to ``restore_trial(index, record)`` before the first
  new one; the job answers with the trial's run id in the current store: the recorded one when
  it is there, else a new child run re-logged from the state (params, ``val_*`` metrics,
  ``trial_seconds``, status, tag ``recsys.restored_from_run_id``). No trial is refitted to be
  restored, and none is lost or repeated. The state keeps every id a trial has had
  (``run_id`` = the latest, ``other_run_ids`` = earlier ones), so switching back to an earlier
  store finds the trial's run there instead of re-logging it again. A restored run has no Spark
  model: if the best trial is one, the job refits that one configuration (same ALS seed, same
  split) and logs its model into the restored run (tag ``recsys.model_refit``) before judging it
  on test. Within one store nothing changes: every recorded run is found and the state is not
  rewritten.
- **Two backends**, one space file, one state format, one resume rule: ``hyperopt`` (default;
  ``hyperopt.tpe.suggest``) and ``optuna`` (``optuna.samplers.TPESampler`` with
  ``n_startup_trials=TPE_STARTUP_TRIALS``). Optuna's proposal for trial ``i`` comes from a study
  rebuilt from the state's records (``create_trial`` + ``add_trial``, failed trials as FAIL) and
  a sampler seeded from ``numpy.random.default_rng([seed, i])``, so it too depends only on the
  seed, the index and the trials before it. The distributions map as: ``loguniform`` ->
  ``FloatDistribution(log=True)``, ``uniform`` -> ``FloatDistribution``, ``quniform`` ->
  ``FloatDistribution(step=q)`` between the multiples of ``q`` nearest the bounds (Hyperopt's
  ``round(x / q) * q`` reaches exactly those values), ``qloguniform`` with ``q = 1`` ->
  ``IntDistribution(log=True)`` between the rounded bounds (rank: integers, log-scaled), any
  other ``qloguniform`` -> ``FloatDistribution(log=True)`` whose draw is rounded to ``q`` as
  Hyperopt does (the state keeps the unrounded draw, which is what TPE models). An Optuna
  state's ``vals`` are Optuna's params; ``params`` (the ``ALSConfig``) mean the same in both.
  The backend is part of the search key, except ``hyperopt``, whose keys are those of states
  written before there was a choice.

The library never touches MLflow: ``run_search`` calls ``evaluate_trial(index, config)``, which
the job supplies (it opens the child run, fits, evaluates and logs) and which returns
``{"metrics": {...}, "run_id": ...}``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from recsys.core import fs
from recsys.core.errors import RecsysError
from recsys.core.metrics import OBJECTIVES, Objective, finite_metrics
from recsys.core.params import MAX_ITER, RELEVANCE_THRESHOLD, SEED, K, param, validate
from recsys.core.progress import Progress, quiet
from recsys.models.als import ALSConfig, ALSRecommender

FEEDBACK_MODES = ("explicit", "implicit")
BACKENDS = ("hyperopt", "optuna")
ON_ERROR = ("continue", "abort")
#: The metrics a search may optimise and whether smaller is better.
DISTRIBUTIONS = ("loguniform", "qloguniform", "uniform", "quniform")
#: The space shipped with the package (``recsys/search/default_space.yaml``), asked for by name.
DEFAULT_SPACE = "default"
DEFAULT_SPACE_FILE = Path(__file__).resolve().parent / "default_space.yaml"
STATE_FORMAT = 1
#: Random trials before TPE models the results. Hyperopt's default (20) would make every search
#: of 20 trials or fewer a pure random search; a fixed value keeps a resumed or extended search
#: on the same sequence of suggestions.
TPE_STARTUP_TRIALS = 5


@dataclass(frozen=True)
class SearchConfig:
    """Parameters of one search; exactly these are logged as the parent run's params."""

    feedback: str = param("explicit", "explicit: ratings, RMSE; implicit: preferences.",
                          choices=FEEDBACK_MODES)
    """``explicit`` (ratings, RMSE) or ``implicit`` (preferences; adds ``alpha`` to the space)."""
    objective: str = param("auto", f"{', '.join(OBJECTIVES)}; auto = rmse (explicit), precision_at_k "
                                   "(implicit).")  # checked by Objective.for_search ("" = auto)
    """Metric to optimise: rmse, precision_at_k, ndcg_at_k, map_at_k; ``auto`` = rmse for
    explicit, precision_at_k for implicit."""
    max_evals: int = param(20, "Number of trials.", low=1)
    """Number of trials (a rerun with a larger value extends the same search)."""
    max_iter: int = MAX_ITER.field(help="ALS sweeps per trial.")
    """ALS sweeps of every trial."""
    k: int = K.field()
    """Cut-off of the ranking metrics."""
    relevance_threshold: float = RELEVANCE_THRESHOLD.field()
    """Held-out ratings at least this are relevant."""
    seed: int = SEED.field(help="Seed of TPE and ALS.")
    """Seed of TPE and of every ALS fit."""
    on_error: str = param("continue", "A failing trial: continue (recorded FAILED) or abort.",
                          choices=ON_ERROR)
    """A failing trial: ``continue`` (the trial is recorded FAILED) or ``abort`` the search."""
    backend: str = param("hyperopt", "TPE of hyperopt (default) or optuna.", choices=BACKENDS)
    """Who proposes the trials: ``hyperopt`` (``tpe.suggest``) or ``optuna`` (``TPESampler``);
    both read the same space file and write the same state."""

    def __post_init__(self):
        validate(self)
        Objective.for_search(self.objective, self.feedback)  # objective and feedback agree

    @property
    def objective_spec(self) -> Objective:
        """The resolved objective (``auto`` -> the feedback mode's default)."""
        return Objective.for_search(self.objective, self.feedback)

    @property
    def metric(self) -> str:
        return self.objective_spec.metric

    def as_params(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- the space


def resolve_space_path(path: str) -> str:
    """``default`` (or empty) is the packaged space; a relative path is read from the working
    directory."""
    if not path or path == DEFAULT_SPACE:
        return str(DEFAULT_SPACE_FILE)
    return path


def load_space(path: str, feedback: str) -> dict[str, dict]:
    """Read and validate the ``feedback`` section of a space YAML: ``{field: {dist, low, high[, q]}}``."""
    resolved = resolve_space_path(path)
    if not os.path.exists(resolved):
        raise RecsysError(f"space={path!r}: file not found (a YAML file with explicit/implicit sections)")
    try:
        with open(resolved, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh)
    except yaml.YAMLError as err:
        raise RecsysError(f"space={path}: not valid YAML: {err}") from err
    if not isinstance(doc, dict) or not isinstance(doc.get(feedback), dict) or not doc[feedback]:
        raise RecsysError(f"space={path}: needs a non-empty mapping under '{feedback}:'")
    allowed = set(ALSConfig.field_names()) - {"implicit_prefs", "seed", "max_iter", "nonnegative", "biases"}
    space: dict[str, dict] = {}
    for name, spec in doc[feedback].items():
        where = f"space={path}: {feedback}.{name}"
        if name not in allowed:
            raise RecsysError(f"{where}: not a searchable ALS parameter; "
                              f"allowed: {', '.join(sorted(allowed))}")
        if not isinstance(spec, dict) or spec.get("dist") not in DISTRIBUTIONS:
            raise RecsysError(f"{where}: needs dist, one of {', '.join(DISTRIBUTIONS)}")
        try:
            low, high = float(spec["low"]), float(spec["high"])
            q = float(spec.get("q", 1.0))
        except (KeyError, TypeError, ValueError) as err:
            raise RecsysError(f"{where}: needs numeric low and high (and q for q* dists)") from err
        if not low < high:
            raise RecsysError(f"{where}: low={low:g} must be < high={high:g}")
        if spec["dist"].endswith("loguniform") and low <= 0:
            raise RecsysError(f"{where}: {spec['dist']} needs low > 0 (got {low:g})")
        if q <= 0:
            raise RecsysError(f"{where}: q={q:g} must be > 0")
        for bound, value in (("low", low), ("high", high)):  # a trial must never get a bad value
            drawn = round(value / q) * q if spec["dist"].startswith("q") else value  # as hyperopt
            try:
                ALSConfig(**{name: int(round(drawn)) if name == "rank" else drawn})
            except RecsysError as err:
                raise RecsysError(f"{where}: {bound}={value:g} is out of range: {err}") from err
        space[name] = {"dist": spec["dist"], "low": low, "high": high}
        if spec["dist"].startswith("q"):
            space[name]["q"] = q
    if feedback == "implicit" and "alpha" not in space:
        raise RecsysError(f"space={path}: the implicit section must search alpha")
    return space


def hyperopt_space(space: dict[str, dict]) -> dict:
    from hyperopt import hp

    out = {}
    for name, s in sorted(space.items()):
        if s["dist"] == "loguniform":
            out[name] = hp.loguniform(name, math.log(s["low"]), math.log(s["high"]))
        elif s["dist"] == "qloguniform":
            out[name] = hp.qloguniform(name, math.log(s["low"]), math.log(s["high"]), s["q"])
        elif s["dist"] == "uniform":
            out[name] = hp.uniform(name, s["low"], s["high"])
        else:
            out[name] = hp.quniform(name, s["low"], s["high"], s["q"])
    return out


def optuna_space(space: dict[str, dict]) -> dict[str, tuple]:
    """``{name: (optuna distribution, q to round the draw to, or None)}``; see the module doc."""
    from optuna.distributions import FloatDistribution, IntDistribution

    out = {}
    for name, s in sorted(space.items()):
        low, high, q = s["low"], s["high"], s.get("q")
        if s["dist"] == "loguniform":
            out[name] = (FloatDistribution(low, high, log=True), None)
        elif s["dist"] == "uniform":
            out[name] = (FloatDistribution(low, high), None)
        elif s["dist"] == "quniform":
            out[name] = (FloatDistribution(round(low / q) * q, round(high / q) * q, step=q), None)
        elif q == 1 and round(low) >= 1:
            out[name] = (IntDistribution(round(low), round(high), log=True), None)
        else:
            out[name] = (FloatDistribution(low, high, log=True), q)
    return out


def _optuna_propose(space: dict, records: list[dict], seed: int, index: int) -> tuple[dict, dict]:
    """Optuna TPE's proposal for trial ``index`` after ``records``: ``(vals, sampled values)``."""
    import numpy as np
    import optuna
    from optuna.distributions import IntDistribution
    from optuna.trial import TrialState, create_trial

    dists = optuna_space(space)
    sampler = optuna.samplers.TPESampler(
        seed=int(np.random.default_rng([seed, index]).integers(2**32)),
        n_startup_trials=TPE_STARTUP_TRIALS)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created" line per trial
    try:
        study = optuna.create_study(direction="minimize", sampler=sampler)
        for rec in records:
            params = {name: int(round(v)) if isinstance(dists[name][0], IntDistribution) else float(v)
                      for name, v in rec["vals"].items()}
            ok = rec["status"] == "ok"
            study.add_trial(create_trial(
                state=TrialState.COMPLETE if ok else TrialState.FAIL, value=rec["loss"] if ok else None,
                params=params, distributions={name: dists[name][0] for name in params}))
        trial = study.ask({name: dist for name, (dist, _) in dists.items()})
    finally:
        optuna.logging.set_verbosity(verbosity)
    vals = {name: float(v) for name, v in trial.params.items()}
    sampled = {name: round(v / dists[name][1]) * dists[name][1] if dists[name][1] else v
               for name, v in vals.items()}
    return vals, sampled


def fit_and_judge(als_config, held):
    """Fit one ALS on ``held.train`` and judge it on ``held`` (a
    :class:`recsys.evaluation.HeldOut` whose fallback is also the ALS's biases):
    ``(recommender, metrics, seconds)``."""
    start = time.time()
    recommender = ALSRecommender(als_config, baseline=held.fallback).fit(held.train)  # biases fitted once
    fit_seconds = time.time() - start
    metrics = held.evaluate(recommender)
    eval_seconds = time.time() - start - fit_seconds
    return recommender, metrics, {"fit_seconds": fit_seconds, "eval_seconds": eval_seconds}


def trial_config(sampled: dict, config: SearchConfig) -> ALSConfig:
    """The ALSConfig of a trial: sampled values (rank rounded) + the search's fixed ones."""
    values = {k: float(v) for k, v in sampled.items()}
    if "rank" in values:
        values["rank"] = int(round(values["rank"]))
    return ALSConfig(max_iter=config.max_iter, implicit_prefs=config.feedback == "implicit",
                     seed=config.seed, **values)


def trial_name(als: ALSConfig, space: dict) -> str:
    """``rank=12 reg_param=0.0531 alpha=2.1``: the searched values, for the child run's name."""
    parts = []
    for name in sorted(space):
        value = getattr(als, name)
        parts.append(f"{name}={value}" if isinstance(value, int) else f"{name}={value:.3g}")
    return " ".join(parts)


def search_key(config: SearchConfig, space: dict, split_digests: dict) -> str:
    """What identifies a search for resuming: everything but ``max_evals`` and ``on_error``.

    ``backend`` counts only when it is not ``hyperopt``: the default's key stays what it was
    before there was a choice, so existing states still resume."""
    ident = {k: v for k, v in config.as_params().items() if k not in ("max_evals", "on_error")}
    if ident.get("backend") == BACKENDS[0]:
        del ident["backend"]
    ident["objective"] = config.metric
    ident.update(space=space, split=split_digests, format=STATE_FORMAT)
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def state_path(split_dir: str, key: str) -> str:
    # "_" prefix: Hadoop/Spark readers of split_dir skip it
    return fs.join(split_dir, "_searches", key, "state.json")


# ---------------------------------------------------------------- running it


def _read_state(spark, path: str, key: str) -> list[dict]:
    try:
        text = fs.read_text_or_none(spark, path)  # or the previous copy, if a write was killed
        if text is None:
            return []
        state = json.loads(text)
    except (UnicodeDecodeError, ValueError) as err:
        raise RecsysError(f"search state {path} is not valid JSON ({err}); it is only ever written "
                          "as JSON by this project: delete it to start the search over") from err
    if not isinstance(state, dict) or state.get("key") != key or state.get("format") != STATE_FORMAT:
        raise RecsysError(f"search state {path} belongs to another search; delete it to start over")
    return list(state["trials"])


def _write_state(spark, path: str, key: str, records: list[dict]) -> None:
    fs.write_text(spark, path, json.dumps({"format": STATE_FORMAT, "key": key, "trials": records},
                                          indent=1, sort_keys=True, allow_nan=False, default=str))


def _rebuild_trials(records: list[dict]):
    from hyperopt import JOB_STATE_DONE, STATUS_FAIL, STATUS_OK, Trials

    trials = Trials()
    for rec in records:
        tid = rec["tid"]
        misc = {"tid": tid, "cmd": ("domain_attachment", "FMinIter_Domain"), "workdir": None,
                "idxs": {k: [tid] for k in rec["vals"]}, "vals": {k: [v] for k, v in rec["vals"].items()}}
        result = ({"status": STATUS_OK, "loss": rec["loss"]} if rec["status"] == "ok"
                  else {"status": STATUS_FAIL})
        docs = trials.new_trial_docs([tid], [None], [result], [misc])
        docs[0]["state"] = JOB_STATE_DONE
        trials.insert_trial_docs(docs)
    trials.refresh()
    return trials


def run_search(spark, config: SearchConfig, space: dict, evaluate_trial, *, state_file: str, key: str,
               progress: Progress = quiet, restore_trial=None) -> list[dict]:
    """Run (or resume) the search; returns the first ``max_evals`` trial records, in order.

    ``evaluate_trial(index, als_config)`` fits and evaluates one trial and returns
    ``{"metrics": {...}, "run_id": str}``; an exception fails the trial (recorded with
    ``status="failed"`` and its error) or, with ``on_error="abort"``, stops the search
    unrecorded, so a rerun retries it. Records: ``tid, vals, params, status, loss, metrics,
    run_id, error, seconds`` (and ``other_run_ids`` once a trial has been restored).

    ``restore_trial(index, record)``, when given, is called for every finished trial found in
    the state, before any new trial: it returns the trial's run id in the current tracking
    store (see the module doc). A changed id is written to the state at once, the earlier one
    kept in ``other_run_ids``.
    """
    from hyperopt import STATUS_FAIL, STATUS_OK  # also the optuna path's trial results

    objective = config.objective_spec
    records = _read_state(spark, state_file, key)
    if records:
        progress(f"[search] resuming: {len(records)} finished trial(s) found in {state_file}")
    if restore_trial is not None:
        for index, rec in enumerate(records[: config.max_evals]):
            run_id = restore_trial(index, rec)
            if run_id != rec.get("run_id"):
                known = [rec.get("run_id"), *rec.get("other_run_ids", [])]
                rec["other_run_ids"] = [r for r in dict.fromkeys(known) if r and r != run_id]
                rec["run_id"] = run_id
                _write_state(spark, state_file, key, records)
    last: dict = {}

    def fn(sampled):
        index = len(records)
        als = trial_config(sampled, config)
        start = time.time()
        last.clear()
        last.update(params=als.as_params(), run_id=None, metrics={}, error=None)
        try:
            out = evaluate_trial(index, als)
            last.update(run_id=out.get("run_id"), metrics=finite_metrics(out["metrics"]))
            loss = objective.loss(out["metrics"])
        except Exception as err:  # noqa: BLE001 - the policy decides; the error is recorded
            last.update(error=f"{type(err).__name__}: {err}"[:2000], seconds=time.time() - start)
            progress(f"[search] trial {index} failed: {last['error'][:300]}")
            if config.on_error == "abort":
                raise
            return {"status": STATUS_FAIL, "error": last["error"]}
        last["seconds"] = time.time() - start
        return {"status": STATUS_OK, "loss": loss}

    def record(tid, vals, ok, loss):
        index = len(records)
        records.append({"tid": tid, "vals": vals, "params": last.get("params"),
                        "status": "ok" if ok else "failed", "loss": loss if ok else None,
                        "metrics": last.get("metrics", {}), "run_id": last.get("run_id"),
                        "error": last.get("error"), "seconds": round(float(last.get("seconds", 0.0)), 3)})
        _write_state(spark, state_file, key, records)
        rec = records[-1]
        value = rec["metrics"].get(objective.metric, float("nan"))
        shown = f"{objective.metric}={value:.4f}" if ok else "FAILED"
        progress(f"[search] trial {index + 1}/{config.max_evals}: {rec['params']} -> {shown} "
                 f"({rec['seconds']:.1f}s)")

    if config.backend == "optuna":
        while len(records) < config.max_evals:
            index = len(records)
            vals, sampled = _optuna_propose(space, records, config.seed, index)
            result = fn(sampled)
            record(index, vals, result["status"] == STATUS_OK, result.get("loss"))
        return records[: config.max_evals]

    import numpy as np
    from hyperopt import fmin, tpe

    trials = _rebuild_trials(records)
    domain_space = hyperopt_space(space)
    algo = functools.partial(tpe.suggest, n_startup_jobs=TPE_STARTUP_TRIALS)
    while len(records) < config.max_evals:
        index = len(records)
        fmin(fn, domain_space, algo=algo, max_evals=index + 1, trials=trials,
             rstate=np.random.default_rng([config.seed, index]), show_progressbar=False,
             verbose=False, return_argmin=False)
        doc = trials.trials[-1]
        vals = {k: float(v[0]) for k, v in doc["misc"]["vals"].items() if v}
        ok = doc["result"]["status"] == STATUS_OK
        record(int(doc["tid"]), vals, ok, float(doc["result"]["loss"]) if ok else None)
    return records[: config.max_evals]


def best_trial(records: list[dict], objective: Objective) -> dict | None:
    """The finished trial with the best objective (earliest on ties); None when all failed."""
    best = None
    for rec in records:
        if rec["status"] != "ok" or objective.metric not in rec["metrics"]:
            continue
        if best is None or objective.better(rec["metrics"][objective.metric],
                                            best["metrics"][objective.metric]):
            best = rec
    return best


def trials_table(records: list[dict]):
    """A pandas DataFrame, one row per trial: index, status, params, val metrics, seconds, run id."""
    import pandas as pd

    rows = []
    for i, rec in enumerate(records):
        row = {"trial": i, "status": rec["status"], "run_id": rec["run_id"], "seconds": rec["seconds"]}
        row.update(rec.get("params") or {})
        row.update({f"val_{k}": v for k, v in (rec.get("metrics") or {}).items()})
        row["error"] = rec.get("error") or ""
        rows.append(row)
    return pd.DataFrame(rows)
