"""Real services on loopback for integration tests: a Spark standalone cluster and an MLflow
tracking server. Each is started on free ports and stopped by its process id."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str, proc=None, log: Path | None = None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{tail}")
        with contextlib.suppress(Exception):
            if predicate():
                return
        time.sleep(0.5)
    tail = log.read_text()[-2000:] if log and log.exists() else ""
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s\n{tail}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _start(cmd: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    fh = open(log, "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env or os.environ.copy(),
                            start_new_session=True)


def _http_json(url: str):
    with urllib.request.urlopen(url, timeout=2) as resp:
        return json.loads(resp.read().decode())


@contextlib.contextmanager
def spark_standalone(workdir: Path, worker_cores: int = 2, worker_memory: str = "2g"):
    """Yield the master URL of a one-worker Spark standalone cluster on 127.0.0.1."""
    import pyspark

    from recsys.core import find_java_home

    workdir.mkdir(parents=True, exist_ok=True)
    spark_home = Path(pyspark.__file__).parent
    spark_class = str(spark_home / "bin" / "spark-class")
    env = dict(os.environ, SPARK_HOME=str(spark_home), SPARK_LOCAL_IP="127.0.0.1",
               PYSPARK_PYTHON=sys.executable, SPARK_WORKER_DIR=str(workdir / "worker"))
    java_home = find_java_home()
    if java_home:
        env["JAVA_HOME"] = java_home
    port, ui, worker_ui = free_port(), free_port(), free_port()
    master_url = f"spark://127.0.0.1:{port}"
    master = _start([spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                     "--port", str(port), "--webui-port", str(ui)], workdir / "master.log", env)
    worker = None
    try:
        _wait(lambda: _http_json(f"http://127.0.0.1:{ui}/json/")["status"] == "ALIVE", 90,
              "spark master", master, workdir / "master.log")
        worker = _start([spark_class, "org.apache.spark.deploy.worker.Worker", master_url,
                         "--host", "127.0.0.1", "--cores", str(worker_cores), "--memory", worker_memory,
                         "--webui-port", str(worker_ui), "--work-dir", str(workdir / "worker")],
                        workdir / "worker.log", env)
        _wait(lambda: len(_http_json(f"http://127.0.0.1:{ui}/json/")["workers"]) == 1, 90,
              "spark worker", worker, workdir / "worker.log")
        yield master_url
    finally:
        if worker is not None:
            _stop(worker)
        _stop(master)


@contextlib.contextmanager
def mlflow_server(workdir: Path, backend_store_uri: str | None = None):
    """Yield the URL of a real `mlflow server` whose artifacts it serves itself (proxied:
    clients see ``mlflow-artifacts:/`` URIs, files land in ``workdir/artifacts``). Backend store:
    ``backend_store_uri`` (e.g. ``postgresql://...``), else SQLite in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", backend_store_uri or f"sqlite:///{workdir}/server.db",
           "--serve-artifacts", "--artifacts-destination", str(workdir / "artifacts"), "--workers", "1"]
    proc = _start(cmd, workdir / "server.log")
    try:
        _wait(lambda: urllib.request.urlopen(f"{url}/health", timeout=2).status == 200, 120,
              "mlflow server", proc, workdir / "server.log")
        yield url
    finally:
        _stop(proc)


#: What to install when the PostgreSQL server binaries are missing (Debian/Ubuntu).
POSTGRESQL_PACKAGE = "postgresql"


def postgresql_bin() -> Path | None:
    """The folder holding PostgreSQL's ``initdb``, ``pg_ctl`` and ``createdb``: ``$PG_BIN``, else
    the newest ``/usr/lib/postgresql/<version>/bin`` (Debian's layout, not on PATH), else the
    folder of ``pg_ctl`` on PATH; None when there is none."""
    import shutil

    tools = ("initdb", "pg_ctl", "createdb", "postgres")
    candidates = [Path(os.environ["PG_BIN"])] if os.environ.get("PG_BIN") else []
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                      key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
    candidates += versions
    if shutil.which("pg_ctl"):
        candidates.append(Path(shutil.which("pg_ctl")).resolve().parent)
    for folder in candidates:
        if all((folder / tool).is_file() for tool in tools):
            return folder
    return None


@contextlib.contextmanager
def postgresql(database: str = "mlflow"):
    """Yield the URI (``postgresql://recsys@127.0.0.1:<port>/<database>``) of a throw-away
    PostgreSQL server: a new cluster in a temporary folder (trust authentication, loopback only,
    its socket in that folder, fsync off), started with ``pg_ctl`` on a free port, with one empty
    database. Stopped and deleted afterwards. Raises ``LookupError`` when the binaries are
    missing (see :data:`POSTGRESQL_PACKAGE`).

    PostgreSQL refuses to run as root: as root, the cluster is made and run by the ``postgres``
    user (``runuser``), in a folder outside pytest's (which only root can enter)."""
    import shutil
    import tempfile

    bin_dir = postgresql_bin()
    if bin_dir is None:
        raise LookupError("no PostgreSQL server binaries (initdb, pg_ctl) in /usr/lib/postgresql/*/bin, "
                          f"on PATH or in $PG_BIN: install the package `{POSTGRESQL_PACKAGE}` "
                          f"(apt-get install -y {POSTGRESQL_PACKAGE})")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="recsys-pg-"))
    if os.geteuid() == 0:
        import pwd

        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root)
            raise LookupError("running as root, and PostgreSQL refuses root: no user `postgres` to run "
                              f"it as (the package `{POSTGRESQL_PACKAGE}` creates it)") from None
        os.chown(root, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, log = root / "data", root / "server.log"
    port = free_port()

    def run(*cmd: str, timeout: float = 120):
        done = subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=timeout, cwd=root)
        if done.returncode != 0:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n"
                               f"{done.stdout}{done.stderr}{tail}")
        return done

    started = False
    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-U", "recsys", "--auth=trust", "--encoding=UTF8",
            "--no-locale", "--no-sync")
        options = (f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off")
        started = True
        run(str(bin_dir / "pg_ctl"), "start", "-D", str(data), "-l", str(log), "-w", "-t", "90",
            "-o", options)
        run(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "recsys", database)
        yield f"postgresql://recsys@127.0.0.1:{port}/{database}"
    finally:
        if started:
            stopped = subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "stop", "-D", str(data),
                                      "-m", "fast", "-w", "-t", "60"],
                                     capture_output=True, text=True, cwd=root)
            pid_file = data / "postmaster.pid"
            if stopped.returncode != 0 and pid_file.exists():  # never leave a server behind
                with contextlib.suppress(ValueError, ProcessLookupError):
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)
