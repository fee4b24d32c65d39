"""Which Spark a job gets: the master's precedence (argument, SPARK_MASTER, Spark Connect's own
SPARK_REMOTE, local[*]) and how a Connect URL is told apart (issue 28)."""

import pytest

from recsys.core.spark import is_connect, is_connect_url, master_from_env


@pytest.mark.parametrize(("given", "env", "expected"), [
    ("yarn", {"SPARK_MASTER": "local[2]", "SPARK_REMOTE": "sc://h:15002"}, "yarn"),
    ("", {"SPARK_MASTER": "local[2]", "SPARK_REMOTE": "sc://h:15002"}, "local[2]"),
    ("", {"SPARK_REMOTE": "sc://h:15002"}, "sc://h:15002"),
    (None, {}, "local[*]"),
])
def test_master_precedence(monkeypatch, given, env, expected):
    for name in ("SPARK_MASTER", "SPARK_REMOTE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert master_from_env(given) == expected


def test_connect_urls_and_sessions(spark):
    assert is_connect_url("sc://localhost:15002") and not is_connect_url("spark://h:7077")
    assert not is_connect(spark)  # the fast suite's session is classic
