"""MLflow plumbing, the only library layer that imports mlflow: runs and their logging
(:mod:`~recsys.mlops.tracking`), the model registry with promotion, aliases and its lock
(:mod:`~recsys.mlops.registry`), and the figures runs log (:mod:`~recsys.mlops.plots`)."""

from recsys.mlops import plots, registry
from recsys.mlops.tracking import (
    adopt_trials,
    find_trial_run,
    finite_metrics,
    kill_stale_runs,
    loaded_spark_model,
    log_als_model,
    log_json,
    log_new_params,
    log_recommender_model,
    log_spark_input,
    mark_training_experiment,
    name_run,
    redact_secrets,
    restore_trial_run,
    save_als_model,
    say,
    share_runs_view,
    spark_session,
    stage_run,
    temp_artifact_dir,
    trial_metrics,
)

__all__ = ["adopt_trials", "find_trial_run", "finite_metrics", "kill_stale_runs", "loaded_spark_model",
           "log_als_model", "log_json", "log_new_params", "log_recommender_model", "log_spark_input",
           "mark_training_experiment", "name_run", "plots", "redact_secrets", "registry",
           "restore_trial_run", "save_als_model", "say", "share_runs_view", "spark_session",
           "stage_run", "temp_artifact_dir", "trial_metrics"]
