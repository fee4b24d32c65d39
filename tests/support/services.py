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
def mlflow_server(workdir: Path):
    """Yield the URL of a real `mlflow server` (sqlite backend, artifacts served by the server)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{workdir}/server.db",
           "--artifacts-destination", str(workdir / "artifacts"), "--workers", "1"]
    proc = _start(cmd, workdir / "server.log")
    try:
        _wait(lambda: urllib.request.urlopen(f"{url}/health", timeout=2).status == 200, 120,
              "mlflow server", proc, workdir / "server.log")
        yield url
    finally:
        _stop(proc)
