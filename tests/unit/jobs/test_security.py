"""Security basics, tried: nothing code-executing is loaded from a user's path, parameters cannot
steer writes out of the chosen output, and credentials never reach params, tags or artifacts.

Commands run in-process through click with the session's SparkSession and tracking store (each
test in an experiment of its own), to stay cheap.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from recsys.cli import main as cli
from recsys.core import RecsysError

PACKAGE = Path(__file__).resolve().parents[3] / "recsys"

# Loaders that run code from the bytes they read.
UNSAFE = re.compile(
    r"^\s*(import|from)\s+(pickle|cPickle|cloudpickle|dill|joblib|shelve|marshal)\b"
    r"|\b(pickle|cloudpickle|dill|joblib|marshal|torch)\s*\.\s*loads?\s*\("
    r"|read_pickle|allow_pickle\s*=\s*True|yaml\.(unsafe_)?load\s*\(|yaml\.Loader|\beval\s*\(|\bexec\s*\(",
    re.MULTILINE)


def test_no_code_executing_loader_in_the_package():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 10
    found = [f"{path.relative_to(PACKAGE.parent)}: {m.group(0).strip()}"
             for path in files for m in UNSAFE.finditer(path.read_text(encoding="utf-8"))]
    assert found == []
    # the checker itself finds what it is meant to find
    assert UNSAFE.search("import pickle\n") and UNSAFE.search("x = joblib.load(path)")
    assert UNSAFE.search("yaml.load(fh)") and not UNSAFE.search("yaml.safe_load(fh)")


def _pickled(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"params": {"strategy": "random"}}))
    return path


def test_a_manifest_that_is_not_json_is_refused_naming_the_file(spark, tmp_path, monkeypatch):
    from recsys.data import load_split

    unpickled = []
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: unpickled.append(a))
    manifest = _pickled(tmp_path / "split" / "manifest.json")
    with pytest.raises(RecsysError, match=re.escape(f"{manifest} is not a valid recsys manifest")):
        load_split(spark, str(tmp_path / "split"))
    (tmp_path / "split" / "manifest.json").write_text("[1, 2]")
    with pytest.raises(RecsysError, match="a JSON object expected"):
        load_split(spark, str(tmp_path / "split"))
    assert unpickled == []


def _search_state(tmp_path):
    from recsys.search import SearchConfig, run_search, search_key

    space = {"rank": {"dist": "quniform", "low": 2.0, "high": 4.0, "q": 1.0}}
    config = SearchConfig(max_evals=1, max_iter=1)
    key = search_key(config, space, {"train": "x"})
    state = _pickled(tmp_path / "_searches" / key / "state.json")

    def never(*_a):
        raise AssertionError("a trial ran although the state could not be read")

    return lambda: run_search(None, config, space, never, state_file=str(state), key=key), state


def test_a_search_state_that_is_not_json_is_refused(tmp_path, monkeypatch):
    unpickled = []
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: unpickled.append(a))
    run, _ = _search_state(tmp_path)
    with pytest.raises(ValueError):  # JSON only: refused, never unpickled, no trial run
        run()
    assert unpickled == []


def test_a_search_state_that_is_not_json_is_refused_naming_the_file(tmp_path):
    run, state = _search_state(tmp_path)
    with pytest.raises(RecsysError, match=re.escape(str(state))):
        run()


def test_zip_members_cannot_climb_out_of_the_extraction_folder(tmp_path):
    from recsys.data import extract_zip

    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,1\n")
        zf.writestr("ml/../../movies.csv", "movieId,title,genres\n1,A (1995),Drama\n")
        zf.writestr("/abs/links.csv", "movieId,imdbId,tmdbId\n1,1,1\n")
    dest = tmp_path / "deep" / "dest"
    dest.mkdir(parents=True)
    out = extract_zip(str(archive), str(archive), str(dest))
    assert out == {"ratings": str(dest / "ratings.csv")}  # names come from the table, not the zip
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["evil.zip", "ratings.csv"]


def _run_cli(args, tmp_path, monkeypatch, experiment):
    """Invoke the CLI in ``tmp_path`` logging to the session store's ``experiment``; returns
    (result, client, the run it recorded)."""
    import mlflow

    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])  # set by the tracking_uri fixture
    name = f"{experiment}-{tmp_path.name}"
    exp_id = client.create_experiment(name, artifact_location=str(tmp_path / "artifacts"))
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", name)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, args)
    runs = client.search_runs([exp_id])
    assert len(runs) == 1, result.output
    return result, client, runs[0]


@pytest.mark.parametrize("option, value", [
    ("--model-name", "../../evil"), ("--model-name", "/tmp/evil"), ("--model-name", "a/b"),
    ("--model-name", "x..y"), ("--run-id", "../../etc/passwd"),
])
def test_names_that_could_become_paths_are_refused(option, value, spark, tmp_path, monkeypatch, tracking_uri):
    result, _, run = _run_cli(["promote", option, value], tmp_path, monkeypatch, "names")
    parameter = option[2:].replace("-", "_")
    assert result.exit_code == 1
    message = result.output.strip().splitlines()[-1]
    assert message.startswith(f"Error: {parameter}={value!r} is not")
    assert run.info.status == "FAILED" and f"{parameter}={value!r}" in run.data.tags["recsys.error"]
    assert not (tmp_path / "evil").exists() and not Path("/tmp/evil").exists()


SECRETS = {"MLFLOW_TRACKING_PASSWORD": "s3cr3t-tracking-password",
           "MLFLOW_TRACKING_TOKEN": "s3cr3t-tracking-token",
           "AWS_SECRET_ACCESS_KEY": "s3cr3t-aws-secret",
           "AWS_SESSION_TOKEN": "s3cr3t-aws-session",
           "AZURE_STORAGE_ACCESS_KEY": "s3cr3t-azure-key"}
CONF_SECRET = "s3cr3t-spark-conf"


def _everything_logged(client, run, tmp_path) -> str:
    """Params, tags and the text of every artifact of ``run``, as one string."""
    import json

    texts = [json.dumps(run.data.params), json.dumps(run.data.tags), run.info.run_name or ""]
    local = client.download_artifacts(run.info.run_id, "", str(tmp_path / "downloaded"))
    files = [p for p in Path(local).rglob("*") if p.is_file()]
    texts += [p.read_bytes().decode("utf-8", "replace") for p in files]
    return "\n".join(texts), [p.name for p in files]


@pytest.mark.slow
def test_credentials_are_never_logged(spark, tmp_path, monkeypatch, tracking_uri):
    from tests.support.tiny_movielens import write_tiny_movielens

    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    data = write_tiny_movielens(tmp_path / "tiny")
    result, client, run = _run_cli(
        ["split", "--data", data, "--split-dir", str(tmp_path / "split"),
         "--spark-conf", f"spark.hadoop.fs.s3a.secret.key={CONF_SECRET};spark.sql.shuffle.partitions=4"],
        tmp_path, monkeypatch, "secrets")
    assert result.exit_code == 0, result.output
    logged, files = _everything_logged(client, run, tmp_path)
    assert "manifest.json" in files and run.data.params["data"] == data  # it did log things
    for secret in [*SECRETS.values(), CONF_SECRET]:
        assert secret not in logged


def test_a_failing_job_does_not_record_a_secret_from_its_error(spark, tmp_path, monkeypatch, tracking_uri):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    # a malformed pair (no '='): the error quotes it, and the error is recorded in the run
    result, client, run = _run_cli(
        ["split", "--split-dir", str(tmp_path / "split"),
         "--spark-conf", f"spark.hadoop.fs.s3a.secret.key {CONF_SECRET}"],
        tmp_path, monkeypatch, "secret-error")
    assert result.exit_code == 1
    assert "expected key=value" in result.output
    assert run.info.status == "FAILED"
    assert "--spark-conf 'spark.hadoop.fs.s3a.secret.key *****'" in run.data.tags["recsys.error"]
    logged, files = _everything_logged(client, run, tmp_path)
    assert "error.txt" in files
    assert CONF_SECRET not in logged
    assert not (tmp_path / "split").exists()


def test_redaction_rules():
    from recsys.mlops import redact_secrets

    os.environ["RECSYS_TEST_API_TOKEN"] = "tok-12345"
    try:
        assert redact_secrets("auth failed with tok-12345") == "auth failed with *****"
    finally:
        del os.environ["RECSYS_TEST_API_TOKEN"]
    text = ("spark.hadoop.fs.s3a.secret.key=abc spark.hadoop.fs.azure.account.key.acct.blob=def "
            "password: ghi spark.driver.memory=8g fs.s3a.access.key AKIA1")
    assert redact_secrets(text) == ("spark.hadoop.fs.s3a.secret.key=***** "
                                    "spark.hadoop.fs.azure.account.key.acct.blob=***** password: ***** "
                                    "spark.driver.memory=8g fs.s3a.access.key *****")
