"""One SparkSession for the whole test session (one per pytest-xdist worker), small and quiet;
shared test data; and CPU accounting.

Suites (markers in pyproject.toml): ``./dev.sh test`` runs the fast suite, every test not marked
``e2e``, ``cluster``, ``server`` or ``slow``, in this process's one JVM; ``./dev.sh test-all``
runs everything.

CPU accounting: the summary ends with the CPU seconds this run used (pytest, its JVM and every
subprocess), beside the wall time, because the machines these suites run on are shared and wall
time alone says little. ``--cpu-durations=N`` lists the N tests that used the most CPU.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

_LOG4J = Path(__file__).resolve().parent.parent / "recsys" / "core" / "log4j2.properties"

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _descendant_cpu(root: int) -> float:
    """CPU seconds (user + system) of the live descendants of process ``root``, from /proc
    (Linux; 0.0 elsewhere). Reaped children are counted by ``os.times()`` instead."""
    parents, cpu = {}, {}
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # the command name (field 2) may contain spaces and parentheses: split after its last ')'
        fields = stat[stat.rfind(b")") + 2:].split()
        parents[pid] = int(fields[1])
        cpu[pid] = (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime
    total = 0.0
    for pid in pids:
        seen, parent = 0, parents.get(pid)
        while parent and parent != root and seen < 64:
            parent, seen = parents.get(parent), seen + 1
        if parent == root:
            total += cpu.get(pid, 0.0)
    return total


def process_tree_cpu() -> float:
    """CPU seconds used so far by this process, its reaped children and its live descendants
    (the py4j JVM, `mlflow run` and `recsys` subprocesses, Spark's Python workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system + _descendant_cpu(os.getpid())


def pytest_addoption(parser):
    parser.addoption("--cpu-durations", type=int, default=0, metavar="N",
                     help="list the N tests that used the most CPU (this process, its JVM and "
                          "subprocesses); 0: none")


def pytest_configure(config):
    config._recsys_cpu = {"start_cpu": process_tree_cpu(), "start_wall": time.time(), "tests": {}}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    # setup + call + teardown, so a session fixture's cost lands on the test that first needs it
    before = process_tree_cpu() if item.config.getoption("cpu_durations") else None
    yield
    if before is not None:
        item.config._recsys_cpu["tests"][item.nodeid] = process_tree_cpu() - before


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    state = config._recsys_cpu
    n = config.getoption("cpu_durations")
    if n and state["tests"]:
        terminalreporter.section(f"{n} most CPU-hungry tests (CPU seconds, process tree)")
        for nodeid, cpu in sorted(state["tests"].items(), key=lambda kv: -kv[1])[:n]:
            terminalreporter.write_line(f"{cpu:8.1f}s  {nodeid}")
    if hasattr(config, "workerinput"):
        return  # an xdist worker: the controller reports the whole tree
    cpu, wall = process_tree_cpu() - state["start_cpu"], time.time() - state["start_wall"]
    load = " ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    terminalreporter.write_line(f"recsys: {cpu:.0f} CPU seconds (pytest, JVMs, subprocesses) in "
                                f"{wall:.0f}s wall; load average now {load}")


#: The checkout the suite runs from: the user's own runs (mlflow.db, mlruns/) and outputs live here.
CHECKOUT = Path(__file__).resolve().parent.parent
#: Folders a run or a build writes into when its working directory is the checkout: watched
#: entirely. Elsewhere only the checkout's top level is watched, so a developer who adds a source
#: file while the suite runs does not fail it.
WATCHED = ("mlruns", "mlartifacts", "outputs", "spark-warehouse", "metastore_db", "build", "dist")
#: Caches and environments, which a session may create in the checkout.
UNWATCHED = (".venv", ".pytest_cache", ".ruff_cache", ".hypothesis", "__pycache__")


def checkout_files(root: Path = CHECKOUT) -> set[str]:
    """The checkout's top-level entries and everything under its ``WATCHED`` folders, as paths
    relative to ``root``; ``UNWATCHED`` names, ``*.egg-info`` and ``$RECSYS_VENV`` left out."""
    venv = Path(os.environ.get("RECSYS_VENV") or root / ".venv").resolve()
    found = set()
    for entry in root.iterdir():
        if entry.name in UNWATCHED or entry.name.endswith(".egg-info") or entry.resolve() == venv:
            continue
        found.add(entry.name)
        if entry.name in WATCHED and entry.is_dir():
            for folder, _, files in os.walk(entry):
                found.update(str(Path(folder, name).relative_to(root)) for name in [*files, "."])
    return found


@pytest.fixture(scope="session", autouse=True)
def _checkout_left_as_found():
    """Fails the session if a test left files in the checkout, or took some away (a user's
    mlruns/, outputs/ or mlflow.db are theirs), naming them."""
    before = checkout_files()
    yield
    after = checkout_files()
    added, removed = sorted(after - before), sorted(before - after)
    if added or removed:
        pytest.fail(f"the tests changed the checkout {CHECKOUT}: "
                    + (f"{len(added)} new: {', '.join(added[:20])}" if added else "")
                    + ("; " if added and removed else "")
                    + (f"{len(removed)} gone: {', '.join(removed[:20])}" if removed else ""),
                    pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory, _checkout_left_as_found):
    # Tests never touch the user's ~/.cache/recsys, ./mlflow.db, ./mlruns or ./outputs: the
    # session works in a temporary folder, so whatever MLflow or a job resolves against the
    # working directory (the default artifact root ./mlruns, fixed when a process first opens a
    # store; the default split outputs/split) lands there, whichever test opens it first.
    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    os.environ["RECSYS_CACHE_DIR"] = str(tmp_path_factory.mktemp("recsys-cache"))
    uri = "sqlite:///" + str(tmp_path_factory.mktemp("mlflow") / "mlflow.db")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    yield uri
    os.chdir(previous)


@pytest.fixture(autouse=True)
def _no_tracking_uri_leaks(_isolated_cache):
    """A test that calls ``mlflow.set_tracking_uri`` must not send later tests' runs to its store
    (MLflow's global URI wins over MLFLOW_TRACKING_URI): unset it after every test, and put the
    environment back (``set_tracking_uri(None)`` also removes the variable)."""
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if "mlflow" in sys.modules:
        sys.modules["mlflow"].set_tracking_uri(None)
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved


@pytest.fixture()
def tracking_uri(_isolated_cache, monkeypatch):
    """The session's tracking store, set in the environment for this test. (A test that calls
    ``mlflow.set_tracking_uri(None)`` removes MLFLOW_TRACKING_URI from the environment.)"""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", _isolated_cache)
    return _isolated_cache


@pytest.fixture(scope="session")
def spark(tmp_path_factory, _isolated_cache):
    from recsys.core import get_spark, parse_conf
    from recsys.core.constants import ALS_BLOCKS_CONF
    from tests.support import jvm_archive

    session = get_spark(
        master="local[2]",
        conf={
            "spark.local.dir": str(tmp_path_factory.mktemp("spark-local")),
            "spark.driver.memory": "2g",
            # Tiny data: Spark's fixed costs are the suite's time. Measured on the fast suite's
            # ALS, batch and evaluation tests (one run each, quiet 2-core machine): 238 s as
            # before, 155 s with the five settings below, 117 s with one ALS block as well.
            "spark.sql.shuffle.partitions": "1",
            "spark.default.parallelism": "1",
            "spark.sql.adaptive.enabled": "false",  # re-planning each stage costs more than it saves
            # interpreted expressions: compiling generated code costs more than running it here
            "spark.sql.codegen.wholeStage": "false",
            "spark.sql.codegen.factoryMode": "NO_CODEGEN",
            # a short-lived JVM: the C2 compiler's work never pays back; one GC thread is enough
            # for a 2 GB heap; Spark's classes come pre-parsed from a CDS archive when
            # ./dev.sh has built one (tests/jvm_archive.py)
            "spark.driver.extraJavaOptions":
                f"-Dlog4j2.configurationFile=file:{_LOG4J} -XX:TieredStopAtLevel=1 -XX:+UseSerialGC "
                + jvm_archive.java_options(),
            ALS_BLOCKS_CONF: "1",  # Spark's default of 10 blocks is ~3x slower on 1,000 ratings
            # extra settings to try (key=value;key=value), e.g. when tuning the suite's speed
            **parse_conf(p for p in os.environ.get("RECSYS_TEST_SPARK_CONF", "").split(";") if p.strip()),
        },
        app_name="recsys-tests",
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def bundled(spark):
    """The bundled ml-latest-small, loaded once (validated and cached as Parquet)."""
    from recsys.data import load_movielens

    return load_movielens(spark, None, progress=lambda _m: None)


@pytest.fixture(scope="session")
def synthetic_ratings(spark):
    """300 users with 1..60 ratings each over 200 movies; timestamps increase per user."""
    import random

    rng = random.Random(7)
    rows = []
    for user in range(1, 301):
        n = 1 + (user * 37) % 60
        movies = rng.sample(range(1, 201), n)
        for i, movie in enumerate(movies):
            rating = rng.choice([0.5 * k for k in range(1, 11)])
            rows.append((user, movie, rating, 1_000_000 + user * 1000 + i))
    from recsys.data import spark_schema

    return spark.createDataFrame(rows, spark_schema("ratings")).cache()
