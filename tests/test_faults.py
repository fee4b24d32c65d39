"""Faults, tried: a split killed with SIGKILL, an unwritable output, a tracking server that is down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.e2e import ROOT
from tests.services import free_port


def _env(tmp_path, **extra):
    return dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db", **extra)


def test_killed_split_leaves_previous_split_intact(spark, bundled, tmp_path):
    from recsys.split import SplitConfig, load_split, make_split

    out = tmp_path / "split"
    good, _ = make_split(spark, bundled.ratings, SplitConfig(seed=1), str(out), source=bundled.source,
                         source_checksum=bundled.checksum, progress=lambda _m: None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "recsys", "split", "--split-dir", str(out), "--seed", "2",
         "--overwrite", "true"],
        cwd=ROOT, env=_env(tmp_path), stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 300
    for line in proc.stderr:  # wait until it is writing partitions, then kill it hard
        if "[split] random split of" in line or time.time() > deadline:
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    # the previous split is untouched and still loads
    assert json.loads((out / "manifest.json").read_text())["digests"] == good["digests"]
    assert load_split(spark, str(out)).test.count() == good["counts"]["test"]["rows"]
    # whatever the killed run left is a temporary sibling without a manifest: never a split
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith("split.")]
    assert all(not (p / "manifest.json").exists() for p in leftovers)

    # and the same command run again completes
    done = subprocess.run(
        [sys.executable, "-m", "recsys", "split", "--split-dir", str(out), "--seed", "2",
         "--overwrite", "true"], cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((out / "manifest.json").read_text())["params"]["seed"] == 2


def test_unwritable_split_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    done = subprocess.run(
        [sys.executable, "-m", "recsys", "split", "--split-dir", str(blocker / "split")],
        cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert done.returncode == 1
    assert f"split_dir {blocker / 'split'} is not writable" in done.stderr
    assert "Traceback" not in done.stderr


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
            cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=600)
        assert done.returncode == 1
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("Error: Spark failed:")
        assert "No space left on device" in last
        assert os.listdir(small) == []  # the temporary split was removed
    finally:
        subprocess.run(["umount", str(small)], check=False)
