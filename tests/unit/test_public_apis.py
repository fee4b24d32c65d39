"""recsys runs unchanged under classic Spark and Spark Connect, and across Spark and MLflow
upgrades: it uses no classic-only or private handle of either (issue 28). A Spark Connect
session has no JVM gateway, no ``sparkContext`` and no RDDs; private MLflow functions carry no
compatibility promise."""

import re
from pathlib import Path

import recsys

PACKAGE = Path(recsys.__file__).resolve().parent
FORBIDDEN = {
    "_jvm": r"\b_jvm\b",
    "_jdf": r"\b_jdf\b",
    "_jsc": r"\b_jsc\b",
    "_jsparkSession": r"\b_jsparkSession\b",
    ".rdd": r"\.rdd\b",
    "sparkContext": r"\bsparkContext\b",
    "_log_v2": r"\b_log_v2\b",
    "private mlflow import": r"from mlflow[\w.]* import \(?\s*_\w+",
    "private mlflow attribute": r"\bmlflow(?:\.[a-z]\w*)*\._[A-Za-z]\w*",
}


def offences(text: str) -> list[str]:
    return [name for name, pattern in FORBIDDEN.items() if re.search(pattern, text)]


def test_no_classic_only_or_private_api_in_the_package():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            for name in offences(line):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {name}: {line.strip()}")
    assert not found, "classic-only or private APIs in recsys/:\n" + "\n".join(found)


def test_the_check_catches_each_pattern():
    planted = ["spark.sparkContext._jvm.org.apache.x", "df._jdf.queryExecution()",
               "sc._jsc.hadoopConfiguration()", "df.rdd.getNumPartitions()",
               "Model._log_v2(artifact_path='m')",
               "from mlflow.models.utils import _save_example", "mlflow.spark._HadoopFileSystem.copy()"]
    for line in planted:
        assert offences(line), line
    assert not offences("spark.read.parquet(path)  # rddish words: records, ddl")
