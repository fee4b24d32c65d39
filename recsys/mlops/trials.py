"""A search's trials as MLflow runs: one nested run per trial, evaluated here or restored from the
search state, and the search's table and figures on the parent run.

:class:`TrialRuns` gives :func:`recsys.search.run_search` its two callbacks: ``evaluate`` (fit
and judge one ALS in a nested run that logs its params, ``val_*`` metrics, seconds and Spark
model) and ``restore`` (a finished trial of the state whose run this tracking store lacks is
re-logged, :func:`recsys.mlops.tracking.restore_trial_run`). ``ensure_model`` refits the best
trial once when it was restored without its model.
"""

from __future__ import annotations

import os
import time

from recsys.core.constants import (
    ALS_MODEL_ARTIFACT,
    TAG_FEEDBACK,
    TAG_MODEL_REFIT,
    TAG_OBJECTIVE,
    TAG_SEARCH_KEY,
    TAG_SPLIT,
    TAG_TRIAL,
)
from recsys.core.metrics import finite_metrics
from recsys.core.spark import released_models
from recsys.mlops import plots
from recsys.mlops.tracking import (
    find_trial_run,
    log_als_model,
    restore_trial_run,
    say,
    stage_run,
    temp_artifact_dir,
    trial_metrics,
)
from recsys.models.als import ALSConfig
from recsys.search.run import fit_and_judge, trial_name


class TrialRuns:
    """The trials of one search (``config``: a :class:`~recsys.search.SearchConfig`) under the
    active parent run, judged on ``held`` (a prepared :class:`~recsys.evaluation.HeldOut`)."""

    def __init__(self, spark, client, parent, config, space: dict, key: str, digest: str, held):
        self.spark, self.client, self.parent = spark, client, parent
        self.config, self.space, self.key, self.digest, self.held = config, space, key, digest, held

    def tags(self, index: int) -> dict:
        return {TAG_FEEDBACK: self.config.feedback, TAG_OBJECTIVE: self.config.metric,
                TAG_SEARCH_KEY: self.key, TAG_SPLIT: self.digest, TAG_TRIAL: str(index)}

    def params(self, als_params: dict) -> dict:
        return {**als_params, "k": self.config.k, "relevance_threshold": self.config.relevance_threshold}

    def evaluate(self, index: int, als_config) -> dict:
        """Fit and judge one trial in its own nested run; ``{"metrics", "run_id"}``."""
        import mlflow

        with stage_run("als_trial", run_name=trial_name(als_config, self.space),
                       tags=self.tags(index)) as child:
            mlflow.log_params(self.params(als_config.as_params()))
            with released_models():
                recommender, metrics, seconds = fit_and_judge(als_config, self.held)
                mlflow.log_metrics({**finite_metrics(trial_metrics(metrics), "val_"), **seconds})
                log_als_model(recommender, self.held.fallback, validate=False, logged_model=False)
                recommender.release()
            return {"metrics": metrics, "run_id": child.info.run_id}

    def restore(self, index: int, record: dict) -> str | None:
        """The run of a finished trial of the state in this store, re-logged if it is missing."""
        experiment_id, parent_id = self.parent.info.experiment_id, self.parent.info.run_id
        found = find_trial_run(self.client, record, experiment_id)
        if found or not record.get("run_id"):  # no id: a failed trial, never adopted either
            return found or record.get("run_id")
        restored = restore_trial_run(
            self.client, experiment_id, parent_id, record,
            run_name=trial_name(ALSConfig(**record["params"]), self.space),
            tags=self.tags(index), params=self.params(record["params"]))
        say(f"[als_search] trial {index}: run {record['run_id']} is not in this tracking store; "
            f"re-logged from the search state as {restored}")
        return restored

    def ensure_model(self, best: dict) -> None:
        """Refit ``best`` once and log its model when its run has none (restored from the state);
        the refit's objective is recorded beside the one the state holds (tag
        ``recsys.model_refit``)."""
        import mlflow

        if self.client.list_artifacts(best["run_id"], ALS_MODEL_ARTIFACT):
            return
        metric = self.config.metric
        with mlflow.start_run(run_id=best["run_id"], nested=True), released_models():
            recommender, refit, _ = fit_and_judge(ALSConfig(**best["params"]), self.held)
            log_als_model(recommender, self.held.fallback, validate=False, logged_model=False)
            recommender.release()
            note = (f"{metric} {refit.get(metric, float('nan')):.6g} "
                    f"(recorded {best['metrics'][metric]:.6g})")
            mlflow.set_tag(TAG_MODEL_REFIT, note)
        say(f"[als_search] best trial {best['run_id']} was restored without its model: refitted, {note}")


def log_search_table(table, config, baselines: dict, records: list[dict], started: float) -> int:
    """Log the trial counts, ``search_seconds``, ``trials.csv`` and the two figures
    (``plots/search_landscape.png``, ``plots/objective_per_trial.png``) on the active parent run;
    returns the number of trials that finished."""
    import mlflow

    ok = sum(r["status"] == "ok" for r in records)
    mlflow.log_metrics({"trials_ok": ok, "trials_failed": len(records) - ok,
                        "search_seconds": time.time() - started})
    direction = config.objective_spec.direction
    with temp_artifact_dir() as tmp:
        table.to_csv(os.path.join(tmp, "trials.csv"), index=False)
        mlflow.log_artifact(os.path.join(tmp, "trials.csv"))
        plot_dir = os.path.join(tmp, "plots")
        os.makedirs(plot_dir)
        plots.search_landscape(table, config.metric, direction,
                               os.path.join(plot_dir, "search_landscape.png"))
        reference = baselines.get(f"baseline_val_{config.metric}")
        label = "bias baseline" if config.metric == "rmse" else "popularity (count)"
        plots.objective_per_trial(table, config.metric, direction, reference, label,
                                  os.path.join(plot_dir, "objective_per_trial.png"))
        mlflow.log_artifacts(plot_dir, "plots")
    return ok
