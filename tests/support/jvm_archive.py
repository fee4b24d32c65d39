"""A class-data-sharing archive for the test session's JVM (HotSpot AppCDS, Java 13+).

The fast suite is CPU-bound in its one JVM, and a large share of that is loading and verifying
the ~25,000 classes Spark, MLlib and Hadoop pull in, looked up one by one across ~250 jars. A
dynamic CDS archive holds those classes already parsed and verified; a JVM that maps it starts
its work sooner. Measured on the evaluation + split + popularity tests (31 tests, CPU seconds of
the process tree, one run each, machine under load): 82 and 84 with G1 (the JVM's default), 76
and 78 with SerialGC, 66 with SerialGC and an archive dumped from a run of those same tests.

``./dev.sh`` builds the archive once per virtualenv (``python -m tests.support.jvm_archive``): a small
local Spark workload (CSV, Parquet, SQL, ALS, MinHash LSH) runs with
``-XX:ArchiveClassesAtExit``, and the file is renamed into place only when the JVM has exited
and written it. The file name carries the PySpark version and the Java runtime, so an upgrade of
either builds a new one instead of mapping a stale one (a JVM that cannot use an archive runs
without it anyway). Nothing but the tests' JVM uses it; a missing archive only costs time.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENV = "RECSYS_TEST_CLASS_ARCHIVE"  # a path to use instead of the default; "" or "off": none


def _java() -> str | None:
    from recsys.core import find_java_home

    home = find_java_home() or os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    return os.path.realpath(java) if java and os.path.exists(java) else None


def archive_path() -> Path | None:
    """Where this interpreter's archive lives (None: switched off or no Java found)."""
    chosen = os.environ.get(ENV)
    if chosen is not None:
        return None if chosen in ("", "off") else Path(chosen)
    import pyspark

    java = _java()
    if java is None:
        return None
    stat = os.stat(java)
    key = hashlib.sha256(f"{pyspark.__version__}|{java}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return Path(sys.prefix) / f"recsys-test-classes-{pyspark.__version__}-{key.hexdigest()[:12]}.jsa"


def java_options() -> str:
    """JVM options for the test session: map the archive when it exists."""
    path = archive_path()
    return f"-XX:SharedArchiveFile={path}" if path is not None and path.is_file() else ""


def _workload(extra_java_options: str) -> None:
    """A few seconds of what the tests do, so the archive holds the classes they load."""
    from pyspark.ml.feature import MinHashLSH
    from pyspark.ml.linalg import Vectors
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from recsys.core import get_spark

    spark = get_spark("local[2]", {"spark.driver.extraJavaOptions": extra_java_options,
                                   "spark.sql.shuffle.partitions": "1",
                                   "spark.ui.showConsoleProgress": "false"}, app_name="recsys-class-archive")
    with tempfile.TemporaryDirectory() as tmp:
        csv = os.path.join(tmp, "ratings.csv")
        with open(csv, "w", encoding="utf-8") as fh:
            fh.write("userId,movieId,rating,timestamp\n")
            fh.writelines(f"{u},{m},{1 + (u * m) % 5}.0,{u * 100 + m}\n"
                          for u in range(1, 41) for m in range(1, 31))
        df = spark.read.options(header="true").csv(csv, inferSchema=True).cache()
        df.write.parquet(os.path.join(tmp, "p"))
        df = spark.read.parquet(os.path.join(tmp, "p"))
        w = Window.partitionBy("userId").orderBy(F.col("rating").desc(), "movieId")
        df.withColumn("r", F.row_number().over(w)).where("r <= 3").join(df, ["userId", "movieId"]).collect()
        df.groupBy("userId").agg(F.collect_set("movieId").alias("s")).select(
            F.transform("s", lambda x: x + 1)).collect()
        model = ALS(userCol="userId", itemCol="movieId", rank=2, maxIter=2, seed=1).fit(df)
        model.transform(df).agg(F.avg("prediction")).collect()
        model.recommendForAllUsers(3).collect()
        sets = spark.createDataFrame([(i, Vectors.sparse(50, [i % 50, (i + 1) % 50], [1.0, 1.0]))
                                      for i in range(20)], ["id", "v"])
        lsh = MinHashLSH(inputCol="v", outputCol="h", numHashTables=2, seed=1).fit(sets)
        lsh.approxSimilarityJoin(sets, sets, 0.9).count()
        df.toPandas()
    jvm = spark.sparkContext._gateway.proc  # spark-submit's JVM: it writes the archive as it exits
    spark.stop()
    jvm.stdin.close()  # the gateway's signal to exit
    jvm.wait(timeout=600)


def build(path: Path, timeout: float = 600) -> bool:
    """Run the workload in a child process, which waits for its JVM to exit and so to have
    written the archive; True if built."""
    partial = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    env = dict(os.environ, **{ENV: "off"})
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "tests.support.jvm_archive", "--workload",
                           f"-XX:ArchiveClassesAtExit={partial}"],
                          cwd=Path(__file__).resolve().parents[2], env=env, capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        sys.stderr.write(f"[setup] no class archive for the tests' JVM (they run, only slower):\n"
                         f"{proc.stderr[-2000:]}\n")
        return False
    os.replace(partial, path)
    print(f"[setup] class archive for the tests' JVM: {path} "
          f"({path.stat().st_size / 2**20:.0f} MiB, {time.time() - started:.0f} s)", file=sys.stderr)
    return True


def main(argv: list[str]) -> int:
    if argv[:1] == ["--workload"]:
        _workload(" ".join(argv[1:]))
        return 0
    path = archive_path()
    if path is None or path.is_file():
        return 0
    for stale in path.parent.glob("recsys-test-classes-*.jsa*"):
        stale.unlink(missing_ok=True)
    return 0 if build(path) else 0  # no archive is slower, never an error


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
