"""Faults, tried: a split and a search killed with SIGKILL, an unwritable output, a tracking
server that is down, a full disk, and two promotions racing on one registry.

The faults that need a process of their own (a `python -m recsys` subprocess, most with its own
JVM) are marked ``slow``: the full suite runs them; the in-process ones stay in the fast suite."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from recsys.core.constants import ALS_BLOCKS_CONF
from tests.support.services import free_port


def _env(tmp_path, **extra):
    return dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db", **extra)


@pytest.fixture(scope="module")
def connect_url(tmp_path_factory):
    from tests.support.connect import spark_connect_server

    with spark_connect_server(tmp_path_factory.mktemp("faults-connect")) as url:
        yield url


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["classic", pytest.param("connect", marks=pytest.mark.server)])
def test_killed_split_leaves_previous_split_intact(spark, bundled, tmp_path, mode, request):
    """Under Spark Connect the killed process is the client: the split's writes run on the
    server, which must not leave anything that looks complete either."""
    from recsys.data import SplitConfig, load_split, make_split

    master = ["--spark-master", request.getfixturevalue("connect_url")] if mode == "connect" else []
    out = tmp_path / "split"
    good, _ = make_split(spark, bundled.ratings, SplitConfig(seed=1), str(out), source=bundled.source,
                         source_checksum=bundled.checksum, progress=lambda _m: None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "recsys", "split", "--split-dir", str(out), "--seed", "2",
         "--overwrite", "true", *master],
        cwd=tmp_path, env=_env(tmp_path), stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 300
    for line in proc.stderr:  # wait until it is writing partitions, then kill it hard
        if "[split] random split of" in line or time.time() > deadline:
            break
    while not list(tmp_path.glob("split.tmp-*/*")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    # the previous split is untouched and still loads
    assert json.loads((out / "manifest.json").read_text())["digests"] == good["digests"]
    assert load_split(spark, str(out)).test.count() == good["counts"]["test"]["rows"]
    # whatever the killed run left is a temporary sibling without a manifest: never a split
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith("split.")]
    assert leftovers and all(p.name.startswith("split.tmp-") and f"-{proc.pid}-" in p.name
                             for p in leftovers)
    assert all(not (p / "manifest.json").exists() for p in leftovers)

    # and the same command run again completes
    done = subprocess.run(
        [sys.executable, "-m", "recsys", "split", "--split-dir", str(out), "--seed", "2",
         "--overwrite", "true", *master],
        cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((out / "manifest.json").read_text())["params"]["seed"] == 2
    # ... and removed what the killed one left: no temporary sibling remains
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("split.")] == []
    assert "left by a split that was killed" in done.stderr


@pytest.mark.slow
def test_unwritable_split_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    done = subprocess.run(
        [sys.executable, "-m", "recsys", "split", "--split-dir", str(blocker / "split")],
        cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert done.returncode == 1
    assert f"split_dir {blocker / 'split'} is not writable" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("entry", ["split"])
def test_unreachable_tracking_server_fails_fast(tmp_path, entry):
    uri = f"http://127.0.0.1:{free_port()}"
    start = time.time()
    done = subprocess.run([sys.executable, "-m", "recsys", entry], cwd=tmp_path,
                          env=dict(os.environ, MLFLOW_TRACKING_URI=uri),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert f"MLflow tracking server {uri} (MLFLOW_TRACKING_URI) is unreachable" in done.stderr
    assert time.time() - start < 60


@pytest.mark.slow
def test_disk_full_is_a_clear_error(tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(small)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "recsys", "split", "--split-dir", str(small / "split")],
            cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=600)
        assert done.returncode == 1
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("Error: Spark failed:")
        assert "No space left on device" in last
        assert os.listdir(small) == []  # the temporary split was removed
    finally:
        subprocess.run(["umount", str(small)], check=False)


TINY_SPACE = ("explicit:\n  rank: {dist: quniform, low: 2, high: 4, q: 1}\n"
              "  reg_param: {dist: loguniform, low: 0.05, high: 0.5}\n")


def _search_args(data, split_dir, space):
    return ["als-search", "--data", data, "--split-dir", str(split_dir), "--max-evals", "2",
            "--max-iter", "2", "--seed", "5", "--space", str(space)]


@pytest.mark.slow
def test_killed_search_resumes_without_losing_or_repeating_trials(spark, tmp_path, monkeypatch, tracking_uri):
    import shutil

    import mlflow
    from click.testing import CliRunner

    from recsys.cli import main as cli
    from tests.support.tiny_movielens import write_tiny_movielens

    data = write_tiny_movielens(tmp_path / "tiny")
    space = tmp_path / "space.yaml"
    space.write_text(TINY_SPACE)
    split = tmp_path / "split"
    # the session's store (creating a database takes seconds), an experiment of our own
    client = mlflow.MlflowClient(tracking_uri)
    experiment = f"killed-search-{tmp_path.name}"
    exp_id = client.create_experiment(experiment, artifact_location=str(tmp_path / "artifacts"))
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", experiment)
    from recsys.jobs import ensure_split

    ensure_split(spark, data, str(split))  # here, so the process to kill starts on its search
    log = open(tmp_path / "killed.log", "w")  # noqa: SIM115 - closed below
    # the ALS blocks of this session, where the reference search below runs
    blocks = f"{ALS_BLOCKS_CONF}={spark.conf.get(ALS_BLOCKS_CONF, '10')}"
    proc = subprocess.Popen([sys.executable, "-m", "recsys", *_search_args(data, split, space),
                             "--spark-master", "local[2]", "--spark-conf", blocks],
                            cwd=tmp_path, env=dict(os.environ),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 900  # generous: CI machines can be slow
    state = None
    while time.time() < deadline and proc.poll() is None:  # kill it once one trial is recorded
        found = list(split.glob("_searches/*/state.json"))
        if found and json.loads(found[0].read_text())["trials"]:
            state = found[0]
            break
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    log.close()
    output = (tmp_path / "killed.log").read_text()
    assert state is not None and proc.returncode == -signal.SIGKILL, output[-3000:]
    before = json.loads(state.read_text())["trials"]
    assert len(before) == 1 and before[0]["status"] == "ok"

    # the same command again, in-process: it resumes
    monkeypatch.chdir(tmp_path)
    resumed = CliRunner().invoke(cli, _search_args(data, split, space))
    assert resumed.exit_code == 0, resumed.output[-3000:]
    assert f"resuming: 1 finished trial(s) found in {state}" in resumed.output
    after = json.loads(state.read_text())["trials"]
    assert len(after) == 2 and after[0] == before[0]  # the finished trial is kept as it was
    assert after[1]["vals"] != after[0]["vals"]

    trials = client.search_runs([exp_id], "tags.`recsys.stage` = 'als_trial'")
    finished = [t for t in trials if t.info.status == "FINISHED"]
    # each trial ran to completion exactly once; what the kill interrupted is marked KILLED
    assert sorted(t.info.run_id for t in finished) == sorted(r["run_id"] for r in after)
    assert sorted(t.data.tags["recsys.trial"] for t in finished) == ["0", "1"]
    assert {t.info.status for t in trials} <= {"FINISHED", "KILLED"}
    assert len(trials) - len(finished) <= 1
    parent = client.search_runs([exp_id], "tags.`recsys.stage` = 'als_search' and "
                                "attributes.status = 'FINISHED'")[0]
    # the killed process's parent run does not stay RUNNING for ever
    searches = client.search_runs([exp_id], "tags.`recsys.stage` = 'als_search'")
    assert sorted(r.info.status for r in searches) == ["FINISHED", "KILLED"]
    assert {t.data.tags["mlflow.parentRunId"] for t in finished} == {parent.info.run_id}

    # an uninterrupted search with the same seed (same split content, its own state) agrees
    reference = tmp_path / "reference-split"
    shutil.copytree(split, reference, ignore=shutil.ignore_patterns("_searches"))
    done = CliRunner().invoke(cli, _search_args(data, reference, space))
    assert done.exit_code == 0, done.output[-3000:]
    ref = json.loads(next(reference.glob("_searches/*/state.json")).read_text())["trials"]
    assert state.parent.name == next(reference.glob("_searches/*")).name  # the same search key
    assert [r["vals"] for r in ref] == [r["vals"] for r in after]
    assert [r["loss"] for r in ref] == pytest.approx([r["loss"] for r in after], rel=1e-9)
    ref_parent = client.search_runs([exp_id], "tags.`recsys.stage` = 'als_search' and "
                                    "attributes.status = 'FINISHED'",
                                    order_by=["attributes.start_time DESC"])[0]
    assert ref_parent.info.run_id != parent.info.run_id
    best = {k: v for k, v in parent.data.params.items() if k.startswith("best_")}
    assert best and best == {k: v for k, v in ref_parent.data.params.items() if k.startswith("best_")}
    assert parent.data.metrics["val_rmse"] == pytest.approx(ref_parent.data.metrics["val_rmse"], rel=1e-9)


def test_racing_promotions_leave_a_consistent_registry(tmp_path, tracking_uri):
    import threading

    import mlflow

    from recsys.mlops import registry
    from tests.unit.mlops.test_registry import _search_run

    uri = tracking_uri  # the session's store: creating one takes seconds
    client = mlflow.MlflowClient(uri)
    name = f"race-{tmp_path.name}"
    exp = mlflow.create_experiment(name, artifact_location=str(tmp_path / "artifacts"))
    first, _ = _search_run(exp, value=0.90)
    registry.promote(client, registry.find_candidate(client, exp, first), name)
    good, good_model = _search_run(exp, value=0.85)
    best, best_model = _search_run(exp, value=0.80)
    # the better one twice (promote is idempotent) and the good one, all at the same moment
    sources = [best, good, best]
    candidates = [registry.find_candidate(client, exp, run) for run in sources]
    barrier = threading.Barrier(len(candidates))
    results, errors = [None] * len(candidates), []

    def go(i):
        try:
            barrier.wait()
            results[i] = registry.promote(mlflow.MlflowClient(uri), candidates[i], name)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(candidates))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors

    versions = client.search_model_versions(f"name='{name}'")
    by_run = {}
    for v in versions:
        by_run.setdefault(v.run_id, []).append(int(v.version))
    assert sorted(len(v) for v in by_run.values()) == [1, 1, 1]  # no run registered twice
    aliases = {a: int(v) for a, v in client.get_registered_model(name).aliases.items()}
    assert aliases["champion"] == by_run[best_model][0]  # the best one, whatever the order
    # as if they had run one after the other: the good one was either kept (the best came
    # first) or promoted and then replaced, and @previous is the champion the best replaced
    decisions = sorted(r["decision"] for r in results)
    if decisions == ["already_champion", "kept", "promoted"]:
        assert aliases["previous"] == 1 and aliases["challenger"] == by_run[good_model][0]
    else:
        assert decisions == ["already_champion", "promoted", "promoted"]
        assert aliases["previous"] == by_run[good_model][0]
        assert aliases["challenger"] == aliases["champion"]
    assert results[0]["version"] == results[2]["version"]
    assert sum(r["registered"] for r in (results[0], results[2])) == 1
    # the lock is gone once they are done
    assert [m.name for m in client.search_registered_models(f"name LIKE '{name}%'")] == [name]


def test_a_run_has_its_tags_from_the_moment_it_exists(tmp_path, monkeypatch, tracking_uri):
    """A process killed right after creating a trial run must leave a run the resumed search can
    find by its tags (a killed search once left an untagged RUNNING trial behind): the tags are
    part of creating the run, not a later call."""
    import mlflow

    from recsys.mlops import stage_run

    client = mlflow.MlflowClient(tracking_uri)
    exp_id = client.create_experiment(f"tags-{tmp_path.name}", artifact_location=str(tmp_path))
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", f"tags-{tmp_path.name}")

    def killed(*_a, **_k):  # what a SIGKILL after the run's creation would leave undone
        raise SystemExit("killed")

    monkeypatch.setattr(mlflow, "set_tags", killed)
    monkeypatch.setattr(mlflow, "set_tag", killed)
    with stage_run("als_trial", tags={"recsys.search_key": "k1", "recsys.trial": "3"}) as run:
        stored = client.get_run(run.info.run_id)
        found = client.search_runs([exp_id], "tags.`recsys.search_key` = 'k1' and "
                                   "attributes.status = 'RUNNING'")
    assert stored.info.status == "RUNNING"
    assert stored.data.tags["recsys.stage"] == "als_trial"
    assert stored.data.tags["recsys.search_key"] == "k1" and stored.data.tags["recsys.trial"] == "3"
    assert [r.info.run_id for r in found] == [run.info.run_id]
