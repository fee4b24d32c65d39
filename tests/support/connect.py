"""A real Spark Connect server for the tests: the `start-connect-server.sh` that the pyspark wheel
ships, run in the foreground (``SPARK_NO_DAEMONIZE``) as its own process group on a free port and
stopped by it. Not ``remote("local")``: that starts a classic JVM inside the test process, where
a stray JVM call would still work."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from pathlib import Path

from tests.support.services import _start, _stop, _wait, free_port


@contextlib.contextmanager
def spark_connect_server(workdir: Path, master: str = "local[2]", *conf: str):
    """Yield ``sc://127.0.0.1:<port>`` of a Connect server whose Python workers run this
    interpreter (so they import this checkout's recsys, as a cluster's workers import the
    installed one). ``conf``: more ``key=value`` server settings."""
    import pyspark

    from recsys.core import find_java_home

    workdir.mkdir(parents=True, exist_ok=True)
    spark_home = Path(pyspark.__file__).parent
    port = free_port()
    env = dict(os.environ, SPARK_HOME=str(spark_home), SPARK_NO_DAEMONIZE="1", SPARK_LOCAL_IP="127.0.0.1",
               SPARK_LOG_DIR=str(workdir / "logs"), SPARK_PID_DIR=str(workdir / "pid"),
               PYSPARK_PYTHON=sys.executable)
    env.pop("SPARK_REMOTE", None)
    java_home = find_java_home()
    if java_home:
        env["JAVA_HOME"] = java_home
    settings = [f"spark.connect.grpc.binding.port={port}", "spark.connect.grpc.binding.address=127.0.0.1",
                "spark.sql.shuffle.partitions=4", f"spark.local.dir={workdir / 'local'}", *conf]
    cmd = [str(spark_home / "sbin" / "start-connect-server.sh"), "--master", master, "--driver-memory", "2g"]
    for setting in settings:
        cmd += ["--conf", setting]
    log = workdir / "server.log"
    proc = _start(cmd, log, env)

    def listening():
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True

    try:
        _wait(listening, 120, "spark connect server", proc, log)
        yield f"sc://127.0.0.1:{port}"
    finally:
        _stop(proc)
