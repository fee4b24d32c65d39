"""The command line answers to the MLproject entry-point names (``recsys als_search``,
``recsys main``) as well as to its own command names, and ``--help`` lists each command once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from recsys import jobs
from recsys.cli import main as cli

ROOT = Path(__file__).resolve().parents[2]
ENTRY_POINTS = yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]


def _command_of(entry_point: str) -> str:
    """The command MLproject runs for an entry point (``python -m recsys <command> ...``)."""
    return ENTRY_POINTS[entry_point]["command"].split()[3]


@pytest.mark.parametrize("entry_point", list(ENTRY_POINTS))
def test_every_entry_point_name_reaches_its_job(entry_point, monkeypatch):
    command = _command_of(entry_point)
    job = command.replace("-", "_")
    calls = []
    monkeypatch.setattr(jobs, job, lambda **kwargs: calls.append(kwargs))
    for name in {entry_point, command}:
        done = CliRunner().invoke(cli, [name])
        assert done.exit_code == 0, f"recsys {name}: {done.output}"
    # both names called the entry point's job, with its declared defaults
    assert len(calls) == len({entry_point, command})
    assert all(kwargs == calls[0] for kwargs in calls)
    assert set(calls[0]) == set(ENTRY_POINTS[entry_point].get("parameters") or {})


def test_an_alias_passes_its_options_through(monkeypatch):
    calls = []
    monkeypatch.setattr(jobs, "als_search", lambda **kwargs: calls.append(kwargs))
    done = CliRunner().invoke(cli, ["als_search", "--max-evals", "3", "--spark-conf", "a=1;b=2"])
    assert done.exit_code == 0, done.output
    assert calls[0]["max_evals"] == "3" and calls[0]["spark_conf"] == ["a=1", "b=2"]
    # and its own --help is the command's
    done = CliRunner().invoke(cli, ["als_search", "--help"])
    assert done.exit_code == 0 and "--max-evals" in done.output
    assert "als-search [OPTIONS]" in done.output.splitlines()[0]


def test_help_lists_each_command_once_with_its_entry_point_name():
    done = CliRunner().invoke(cli, ["--help"])
    assert done.exit_code == 0, done.output
    listing = done.output.split("Commands:", 1)[1]
    rows = re.findall(r"^  (\S+)", listing, flags=re.MULTILINE)
    assert sorted(rows) == sorted(_command_of(e) for e in ENTRY_POINTS)
    for entry_point in ENTRY_POINTS:
        if entry_point != _command_of(entry_point):
            assert f"Also: {entry_point}." in listing, entry_point


def test_an_unknown_command_is_refused_by_name():
    done = CliRunner().invoke(cli, ["als_serach"])
    assert done.exit_code == 2 and "No such command 'als_serach'" in done.output
