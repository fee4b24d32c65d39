"""Where runs go and what they are called (``recsys.tracking.stage_run`` / ``name_run``), on the
session's tracking store, without Spark: the experiment ``recsys`` by default, the user's
``MLFLOW_EXPERIMENT_NAME`` when set, nested runs in their parent's experiment, and a run that
`mlflow run` made (``MLFLOW_RUN_ID``) left in its experiment, renamed unless the user named it.
tests/test_e2e_split.py checks the same under a real `mlflow run`."""

from __future__ import annotations

import mlflow
import pytest

from recsys.core.constants import DEFAULT_EXPERIMENT
from recsys.mlops import name_run, stage_run


@pytest.fixture()
def client(tracking_uri, monkeypatch):
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    return mlflow.MlflowClient(tracking_uri)


def _experiment_name(client, run_id):
    return client.get_experiment(client.get_run(run_id).info.experiment_id).name


def test_runs_go_to_the_recsys_experiment_with_names_that_say_what_they_are(client):
    with stage_run("als") as run:
        name_run("als explicit rank=10 reg_param=0.1")
        with stage_run("als_trial", run_name="rank=4") as child:
            pass
    assert _experiment_name(client, run.info.run_id) == DEFAULT_EXPERIMENT == "recsys"
    assert client.get_run(run.info.run_id).info.run_name == "als explicit rank=10 reg_param=0.1"
    assert client.get_run(run.info.run_id).data.tags["mlflow.runName"] == "als explicit rank=10 reg_param=0.1"
    found = client.get_run(child.info.run_id)
    assert found.info.experiment_id == run.info.experiment_id and found.info.run_name == "rank=4"
    assert found.data.tags["mlflow.parentRunId"] == run.info.run_id


def test_the_users_experiment_wins_and_nested_runs_follow_their_parent(client, monkeypatch, tmp_path):
    mine = f"mine-{tmp_path.name}"
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", mine)  # created by MLflow when missing
    with stage_run("main") as run:
        monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", f"other-{tmp_path.name}")
        with stage_run("split") as child:
            pass
    assert _experiment_name(client, run.info.run_id) == mine
    assert _experiment_name(client, child.info.run_id) == mine
    assert client.get_run(run.info.run_id).info.run_name == "main"


@pytest.mark.parametrize("given, expected", [(None, "split random 0.8/0.1/0.1 seed 42"),
                                             ("my own name", "my own name")])
def test_a_run_mlflow_run_made_stays_in_its_experiment_and_gets_a_name_unless_the_user_gave_one(
        client, monkeypatch, tmp_path, given, expected):
    # what `mlflow run --experiment-name <x> [--run-name <given>]` leaves for the entry point
    exp = client.create_experiment(f"project-{tmp_path.name}", artifact_location=str(tmp_path / "a"))
    made = client.create_run(exp, run_name=given)  # no name: MLflow generates adjective-noun-123
    monkeypatch.setenv("MLFLOW_RUN_ID", made.info.run_id)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", exp)
    with stage_run("split") as run:
        assert run.info.run_id == made.info.run_id
        name_run("split random 0.8/0.1/0.1 seed 42")
    found = client.get_run(made.info.run_id)
    assert found.info.experiment_id == exp and found.info.status == "FINISHED"
    assert found.info.run_name == found.data.tags["mlflow.runName"] == expected


def test_the_ui_opens_a_recsys_experiment_in_its_training_view_unless_a_user_chose_a_kind(
        client, monkeypatch, tmp_path):
    # MLflow 3.18's UI shows its GenAI page unless mlflow.experimentKind says "training"
    with stage_run("split") as run:
        with stage_run("als_trial"):
            pass
    kind = client.get_experiment(run.info.experiment_id).tags.get("mlflow.experimentKind")
    assert client.get_experiment(run.info.experiment_id).name == "recsys"
    assert kind == "custom_model_development"
    # the user's own experiment: tagged when it has no kind or only the UI's guess, never re-chosen
    for given, expected in ((None, "custom_model_development"),
                            ("genai_development_inferred", "custom_model_development"),
                            ("genai_development", "genai_development")):
        name = f"kind-{given}-{tmp_path.name}"
        tags = {"mlflow.experimentKind": given} if given else None
        client.create_experiment(name, artifact_location=str(tmp_path / name), tags=tags)
        monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", name)
        with stage_run("baseline") as run:
            pass
        assert client.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"] == expected, given


def test_main_shares_a_runs_view_whose_link_opens_the_training_view_with_its_metric_columns(client, tmp_path):
    import json

    from recsys.mlops import share_runs_view

    exp = client.create_experiment(f"share-{tmp_path.name}", artifact_location=str(tmp_path / "a"))
    columns = ["ranking/champion_test_precision_at_k", "twins/t"]
    link = share_runs_view(client, exp, "recsys-headline", columns)
    assert link == (f"http://127.0.0.1:5000/#/experiments/{exp}/runs?workflowType=machine_learning"
                    "&viewStateShareKey=recsys-headline")  # a local store: `mlflow ui`'s default address
    state = json.loads(client.get_experiment(exp).tags["mlflow.sharedViewState.recsys-headline"])
    assert state == {"selectedColumns": ["metrics.`ranking/champion_test_precision_at_k`",
                                         "metrics.`twins/t`"]}
