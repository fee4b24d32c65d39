"""Bad input, tried, across entry points. Every case must give: a one-line message naming the
problem, exit status 1, the MLflow run FAILED with the error recorded, and no output left behind.

The commands run in-process through click (sharing the session's SparkSession) to keep the
suite fast; tests/test_e2e_*.py cover the same path under `mlflow run`.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from recsys.cli import main as cli
from tests.support.marks import fast_cases

RATINGS = "userId,movieId,rating,timestamp\n1,1,4.0,100\n1,2,3.5,101\n2,1,5.0,102\n2,3,0.5,103\n"
MOVIES = "movieId,title,genres\n1,A (1995),Comedy\n2,B (1995),Action\n3,C (1996),Drama\n"


def _release(root: Path, ratings=RATINGS, movies: str | bytes = MOVIES) -> str:
    root.mkdir(parents=True, exist_ok=True)
    (root / "ratings.csv").write_text(ratings) if isinstance(ratings, str) else \
        (root / "ratings.csv").write_bytes(ratings)
    (root / "movies.csv").write_text(movies) if isinstance(movies, str) else \
        (root / "movies.csv").write_bytes(movies)
    return str(root)


def _zip(root: Path, members: dict[str, str], truncate: bool = False) -> str:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "release.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    if truncate:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    return str(path)


def _flipped(root: Path) -> str:
    body = bytearray(RATINGS.encode())
    body[RATINGS.index("3.5")] ^= 0x40  # '3' -> 's': one flipped bit in a rating
    return _release(root, ratings=bytes(body))


# id -> (data builder or None, extra argv, fragment expected in the message)
SPLIT_CASES = {
    "missing_path": (lambda d: str(d / "nope.zip"), [], "does not exist"),
    "zip_wrong_layout": (lambda d: _zip(d, {"x/readme.txt": "hi"}), [], "no ratings.csv in the zip"),
    "truncated_zip": (lambda d: _zip(d, {"ml/ratings.csv": RATINGS * 50, "ml/movies.csv": MOVIES},
                                     truncate=True), [], "not a readable zip"),
    "wrong_header": (lambda d: _release(d, "user,movie,rating,timestamp\n1,1,4.0,1\n"), [],
                     "missing column(s): userId, movieId"),
    "extra_column": (lambda d: _release(d, "userId,movieId,rating,timestamp,x\n1,1,4.0,1,2\n"), [],
                     "unexpected column(s): x"),
    "missing_column": (lambda d: _release(d, "userId,movieId,rating\n1,1,4.0\n"), [],
                       "missing column(s): timestamp"),
    "non_numeric": (lambda d: _release(d, RATINGS + "x1,1,4.0,1\n"), [], "column userId is not numeric"),
    "rating_out_of_range": (lambda d: _release(d, RATINGS + "3,1,6.0,1\n"), [],
                            "column rating must be 0.5..5.0 in half steps"),
    "rating_not_half_step": (lambda d: _release(d, RATINGS + "3,1,2.25,1\n"), [], "line 6: 3,1,2.25,1"),
    "duplicate_pair": (lambda d: _release(d, RATINGS + "2,3,4.0,1\n"), [],
                       "duplicate (userId, movieId) key(s)"),
    "empty_file": (lambda d: _release(d, ""), [], "ratings.csv: the file is empty"),
    "byte_flipped": (_flipped, [], "column rating is not numeric"),
    "non_utf8_title": (lambda d: _release(d, movies=b"movieId,title,genres\n1,Am\xe9lie (2001),Drama\n"),
                       [], "column title is not valid UTF-8"),
    "negative_id": (lambda d: _release(d, RATINGS + "3,-7,4.0,1\n"), [], "movieId must be a positive id"),
    "huge_id": (lambda d: _release(d, RATINGS + "3,4294967296,4.0,1\n"), [], "movieId is not numeric"),
    "fractions_sum": (None, ["--fractions", "0.8,0.1,0.2"], "must sum to 1"),
    "fractions_shape": (None, ["--fractions", "0.8,0.2"], "expected three numbers"),
    "unknown_strategy": (None, ["--strategy", "by-genre"], "allowed: random, user, temporal"),
    "negative_min_user_ratings": (None, ["--min-user-ratings", "-3"],
                                  "min_user_ratings=-3 must be an integer >= 0"),
}


@pytest.fixture(scope="module")
def _store(tmp_path_factory):
    """One tracking store for the module (creating a SQLite store costs ~2 s); each test gets
    its own experiment in it, so the run it checks is the one it caused."""
    return f"sqlite:///{tmp_path_factory.mktemp('bad-input')}/mlflow.db"


def _invoke_and_check_failure(args, fragment, tmp_path, monkeypatch, store):
    """Run the CLI in ``tmp_path`` with an experiment of its own and check the failure contract:
    exit 1, a last line naming the problem, the MLflow run FAILED with the error recorded."""
    import mlflow

    client = mlflow.MlflowClient(store)
    experiment_id = client.create_experiment(tmp_path.name, artifact_location=str(tmp_path / "mlruns"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment_id)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    message = result.output.strip().splitlines()[-1]
    assert message.startswith("Error: ") and fragment in message, message
    runs = client.search_runs([experiment_id], order_by=["attributes.start_time DESC"])
    assert len(runs) == 1, "expected exactly the one MLflow run of this command"
    assert runs[0].info.status == "FAILED"
    assert fragment in runs[0].data.tags["recsys.error"]


# the reader's own messages are tested case by case in tests/test_movielens.py; here, one case
# per stage that can fail (path, zip, header, values, keys, parameters)
@pytest.mark.parametrize("case", fast_cases(sorted(SPLIT_CASES), {
    "missing_path", "truncated_zip", "wrong_header", "non_numeric", "duplicate_pair", "fractions_sum",
    "unknown_strategy", "negative_min_user_ratings"}))
def test_split_bad_input(case, tmp_path, spark, monkeypatch, _store):
    build, argv, fragment = SPLIT_CASES[case]
    out = tmp_path / "split"
    args = ["split", "--split-dir", str(out), *argv]
    if build is not None:
        args += ["--data", build(tmp_path / "data")]
    _invoke_and_check_failure(args, fragment, tmp_path, monkeypatch, _store)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("split.")]


# Parameter errors of the other entry points: (argv after the command, fragment). They must be
# caught before any work starts, so not even the default split is created.
PARAM_CASES = {
    "baseline_k_zero": (["baseline", "--k", "0"], "k=0 must be an integer >= 1"),
    "baseline_threshold": (["baseline", "--relevance-threshold", "7"],
                           "relevance_threshold=7 must be a finite number in [0.5, 5]"),
    "baseline_kind": (["baseline", "--kind", "newest"], "kind='newest' is unknown; allowed: count"),
    "baseline_damping": (["baseline", "--damping", "-1"], "damping=-1 must be a finite number >= 0"),
    "twins_method": (["twins", "--method", "kmeans"], "method='kmeans' is unknown; allowed:"),
    "twins_similarity": (["twins", "--target-similarity", "1.5"],
                          "target_similarity=1.5 must be a finite number in (0, 1)"),
    "als_rank_zero": (["als", "--rank", "0"], "rank=0 must be an integer >= 1"),
    "als_negative_reg_param": (["als", "--reg-param", "-0.1"], "reg_param=-0.1 must be a finite number >= 0"),
    "als_implicit_prefs": (["als", "--implicit-prefs", "maybe"],
                           "implicit_prefs='maybe' must be true or false"),
    "search_objective": (["als-search", "--objective", "auc"], "objective='auc' is unknown; allowed: auto"),
    "search_objective_feedback": (["als-search", "--feedback", "implicit", "--objective", "rmse"],
                                  "objective=rmse needs feedback=explicit"),
    "search_max_evals": (["als-search", "--max-evals", "0"], "max_evals=0 must be an integer >= 1"),
    "search_space_bounds": (["als-search", "--space", "bad_space.yaml"],
                            "explicit.reg_param: low=-1 is out of range"),
    "promote_force": (["promote", "--force", "perhaps"], "force='perhaps' must be true or false"),
    "synthesize_users": (["synthesize", "--n-users", "0"], "n_users=0 must be an integer in 1.."),
    "synthesize_format": (["synthesize", "--format", "tar"], "format='tar' is unknown; allowed:"),
}


@pytest.mark.parametrize("case", sorted(PARAM_CASES))
def test_parameter_errors(case, tmp_path, spark, monkeypatch, _store):
    argv, fragment = PARAM_CASES[case]
    out = tmp_path / "out"
    (tmp_path / "bad_space.yaml").write_text("explicit:\n  reg_param: {dist: uniform, low: -1, high: 1}\n")
    if argv[0] == "synthesize":
        argv = [*argv, "--output", str(out)]
    elif argv[0] not in ("twins", "promote"):
        argv = [*argv, "--split-dir", str(out)]
    _invoke_and_check_failure(argv, fragment, tmp_path, monkeypatch, _store)
    assert not out.exists()
