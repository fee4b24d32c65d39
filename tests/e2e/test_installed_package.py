"""The package stands alone: the wheel built from this checkout, installed into a new venv, runs
`recsys main` (the MLproject name) in an empty folder, with no checkout in sight, on MLflow's
default store there. What it needs beyond code (the default search space, the bundled data, the
log4j settings) must come from the wheel.

Fast enough for the full suite: the new venv installs only the wheel (``--no-deps``) and sees the
dependencies of the running venv through a ``.pth`` line, which adds that venv's site-packages
as a plain folder: its ``.pth`` files (an editable install of recsys pointing at the checkout)
are not processed, so ``import recsys`` can only find the wheel's copy (asserted)."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.support.tiny_movielens import write_tiny_movielens

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
#: Not part of a source tree to build from: environments, caches, the user's own runs and outputs.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info", "build", "dist", "mlruns",
                                    "mlartifacts", "outputs", "mlflow.db", ".pytest_cache", ".ruff_cache")
PACKAGE_DATA = ("recsys/search/default_space.yaml", "recsys/core/log4j2.properties",
                "recsys/data/bundled/ml-latest-small.zip", "recsys/data/bundled/ml-latest-small-README.txt")


def _run(cmd, **kwargs):
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))}:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv python, venv bin folder) with recsys installed from a wheel of this checkout."""
    tmp = tmp_path_factory.mktemp("installed")
    # a copy: building in the checkout would leave build/ and *.egg-info there
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp / "dist"),
          str(source)], timeout=600)
    [wheel] = (tmp / "dist").glob("recsys-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert set(PACKAGE_DATA) <= names, sorted(set(PACKAGE_DATA) - names)
    assert not any(n.startswith(("tests/", "experiments/")) for n in names)

    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], timeout=120)
    python = venv / "bin" / "python"
    where = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    purelib = _run([str(python), "-c", where]).stdout.strip()
    # the running venv's packages (pyspark, mlflow, ...) as a plain folder, after the wheel's
    ours = [p for p in {sysconfig.get_paths()["purelib"], *site.getsitepackages()} if Path(p).is_dir()]
    Path(purelib, "zz-recsys-test-deps.pth").write_text("\n".join(ours) + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
          "--no-index", str(wheel)], timeout=300)
    return python, venv / "bin"


def _clean_env(bin_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           # a new user's shell: MLflow's default store, Spark's workers on this interpreter
           if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID",
                        "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = str(bin_dir) + os.pathsep + env["PATH"]
    return env


def test_recsys_comes_from_the_wheel_and_finds_its_data(installed, tmp_path):
    python, bin_dir = installed
    probe = ("import json, recsys, recsys.search as s, recsys.data as d; print(json.dumps("
             "[recsys.__file__, s.resolve_space_path(s.DEFAULT_SPACE), d.bundled_source()]))")
    done = _run([str(python), "-c", probe], cwd=tmp_path, env=_clean_env(bin_dir))
    module, space, data = json.loads(done.stdout)
    venv = str(python.parent.parent)
    assert module.startswith(venv) and not module.startswith(str(ROOT)), module
    assert space.startswith(venv) and Path(space).is_file()
    assert data.startswith(venv) and zipfile.is_zipfile(data)


def test_installed_recsys_main_runs_in_an_empty_folder(installed, tmp_path):
    import mlflow

    python, bin_dir = installed
    data = write_tiny_movielens(tmp_path / "tiny", per_user=24)  # twins keep users with >= 20
    work = tmp_path / "empty"
    work.mkdir()
    done = subprocess.run([str(bin_dir / "recsys"), "main", "--data", data, "--ranking-evals", "2",
                           "--rating-evals", "2", "--max-iter", "3"], cwd=work, env=_clean_env(bin_dir),
                          capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-5000:]

    # everything relative landed in the folder it ran from: MLflow's default store and
    # artifact root, the default split and the lists beside it
    assert (work / "mlflow.db").is_file() and (work / "mlruns").is_dir()
    manifest = json.loads((work / "outputs" / "split" / "manifest.json").read_text())
    assert manifest["counts"]["train"]["users"] == 60
    client = mlflow.MlflowClient(f"sqlite:///{work}/mlflow.db")
    experiment = client.get_experiment_by_name("recsys")
    found = client.search_runs([experiment.experiment_id])
    assert all(r.info.status == "FINISHED" for r in found)
    [main] = [r for r in found if r.data.tags.get("recsys.stage") == "main"]
    searches = [r for r in found if r.data.tags.get("recsys.stage") == "als_search"]
    assert len(searches) == 2 and all(r.data.metrics["trials_ok"] == 2 for r in searches)
    # both roles registered, from the searches' best trials, and judged against their baselines
    for name, objective in (("recsys-als", "precision_at_k"), ("recsys-als-ratings", "rmse")):
        version = client.get_model_version_by_alias(name, "challenger")
        search = next(s for s in searches if s.info.run_id == version.tags["recsys.source_run_id"])
        assert version.run_id == search.data.tags["recsys.best_run_id"]
        score = search.data.metrics[f"test_{objective}"]
        assert 0.0 < score < (4.5 if objective == "rmse" else 1.0)
        # the artifacts are under ./mlruns of the folder, and the version loads from there
        assert Path(client.get_run(version.run_id).info.artifact_uri.removeprefix("file://")).is_relative_to(work)
    assert any((work / "outputs" / "recommendations").glob("recsys-als-v*/*.parquet"))
    assert main.info.run_name == "main"
