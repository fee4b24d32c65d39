"""Hyperparameter search over ALS: the space (YAML; the default ships as
``default_space.yaml``), the Hyperopt and Optuna TPE backends, resumable state, and the best
trial under one objective (:mod:`~recsys.search.run`)."""

from recsys.search.run import (
    BACKENDS,
    DEFAULT_SPACE,
    FEEDBACK_MODES,
    OBJECTIVES,
    Objective,
    SearchConfig,
    best_trial,
    fit_and_judge,
    load_space,
    optuna_space,
    resolve_space_path,
    run_search,
    search_key,
    state_path,
    trial_config,
    trial_name,
    trials_table,
)

__all__ = ["BACKENDS", "DEFAULT_SPACE", "FEEDBACK_MODES", "OBJECTIVES", "Objective", "SearchConfig",
           "best_trial", "fit_and_judge", "load_space", "optuna_space", "resolve_space_path", "run_search",
           "search_key", "state_path", "trial_config", "trial_name", "trials_table"]
