"""`promote` entry point: register a search's best model, move @champion only if it is better."""

from __future__ import annotations

import os

from recsys.core.params import check_bool
from recsys.entry_points import declared
from recsys.mlops.tracking import (
    log_json,
    log_new_params,
    name_run,
    say,
    stage_run,
    temp_artifact_dir,
)


@declared("promote")
def promote(run_id, model_name, force):
    """`promote` entry point: register a search's best model and move aliases (recsys.mlops.registry).

    ``run_id``: an als_search run (default: the latest finished one in the experiment) or a run
    with a model and ``test_*`` metrics. ``model_name``: default by the search's objective,
    ``recsys-als`` for a ranking metric, ``recsys-als-ratings`` for RMSE. Logs params ``run_id``
    (as given), ``source_run_id`` (resolved), ``model_run_id``, ``model_name`` (as given),
    ``registered_model_name`` (resolved), ``force``; the decision as
    :func:`recsys.mlops.registry.promote` records it: metrics ``candidate_test_<objective>``,
    ``champion_test_<objective>`` and ``champion_version`` (the champion before this run),
    ``baseline_test_<objective>``, ``model_version``, tags ``recsys.decision``
    (promoted/kept/already_champion), ``recsys.decision_reason`` and the rest of the history row;
    artifacts ``promotion.json`` (this decision) and ``promotion_history.csv`` (every recorded
    decision on the model so far, from all its promote runs). Returns the decision dict.
    """
    import mlflow

    from recsys.mlops import registry
    with stage_run("promote") as run:
        force = check_bool("force", force)
        client = mlflow.MlflowClient()
        if model_name:  # before any work: the name may become a path
            registry.check_model_name(model_name)
        candidate = registry.find_candidate(client, run.info.experiment_id, run_id or "")
        given, model_name = model_name, model_name or registry.default_model_name(candidate.objective.metric)
        name_run(f"promote {model_name} from run {candidate.source_run_id[:8]}")
        # model_name as given (under `mlflow run` MLflow has logged it already, "" included);
        # registered_model_name is the one used
        log_new_params({"run_id": run_id or "", "source_run_id": candidate.source_run_id,
                        "model_run_id": candidate.model_run_id, "model_name": given,
                        "registered_model_name": model_name, "force": force})
        # the decision lands on this run as tags and metrics, written under the promotion lock
        result = registry.promote(client, candidate, model_name, force=force, promote_run_id=run.info.run_id)
        log_json(result, "promotion.json")
        history = registry.promotion_history(client, model_name)
        with temp_artifact_dir() as tmp:
            history.to_csv(os.path.join(tmp, "promotion_history.csv"), index=False)
            mlflow.log_artifact(os.path.join(tmp, "promotion_history.csv"))
        say(f"[promote] {model_name} v{result['version']} "
            f"({'registered' if result['registered'] else 'already registered'}): "
            f"{result['decision']} - {result['reason']}")
        return result
