"""Helpers for end-to-end tests that run `mlflow run . -e <entry> --env-manager local`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def mlflow_run(entry: str, tracking_uri: str, *params: str, timeout: int = 900, env: dict | None = None,
               options: tuple = (), cwd: str | None = None):
    """Run an entry point in a subprocess; returns the CompletedProcess (text output).
    ``options``: more `mlflow run` options, e.g. ``("--experiment-name", "x")``. ``cwd``: where
    `mlflow run` starts (default: the SQLite store's folder; the entry point itself always runs
    in the checkout, as `mlflow run` does: give it absolute output paths)."""
    full_env = dict(os.environ, MLFLOW_TRACKING_URI=tracking_uri,
                    PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    full_env.update(env or {})
    cmd = [sys.executable, "-m", "mlflow", "run", str(ROOT), "-e", entry, "--env-manager", "local",
           *options]
    for p in params:
        cmd += ["-P", p]
    # Run from the tracking store's folder, so MLflow's default artifact root (./mlruns, resolved
    # when the store is created) lands there and not in the checkout.
    prefix = "sqlite:///"
    if cwd is None and tracking_uri.startswith(prefix):
        cwd = tracking_uri[len(prefix):].rsplit("/", 1)[0]
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def runs(tracking_uri: str, experiment: str = "Default"):
    """(client, runs of the experiment, oldest first)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
