"""MLproject, the click commands and the jobs agree with the one declaration of every entry point's
parameters (recsys.entry_points): names, order, types, defaults, and the option each reaches."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import yaml

from recsys.cli import COMMANDS
from recsys.cli import main as cli
from recsys.entry_points import ENTRY_POINTS

ROOT = Path(__file__).resolve().parents[3]


def _entry_points():
    return yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]


def test_every_parameter_reaches_a_click_option():
    for name, spec in _entry_points().items():
        command = spec["command"]
        tokens = command.split()
        assert tokens[:3] == ["python", "-m", "recsys"], name
        click_cmd = cli.commands[tokens[3]]
        options = {opt for p in click_cmd.params for opt in p.opts}
        for param in spec.get("parameters", {}):
            assert "{" + param + "}" in command, f"{name}: parameter {param} never reaches the command"
            # the placeholder follows an option that the click command declares
            match = re.search(r"(--[\w-]+)\s+\{" + param + r"\}", command)
            assert match, f"{name}: {{{param}}} is not the value of an option"
            assert match.group(1) in options, f"{name}: {match.group(1)} is not an option of {tokens[3]}"
        for opt in re.findall(r"--[\w-]+", command):
            assert opt in options, f"{name}: {opt} is not an option of {tokens[3]}"


def test_every_entry_point_runs_with_defaults_only():
    for name, spec in _entry_points().items():
        for param, p in (spec.get("parameters") or {}).items():
            assert "default" in p, f"{name}.{param} has no default"


def mlproject_mismatch(text: str) -> str | None:
    """The first place where an MLproject text disagrees with ``ENTRY_POINTS``, or None."""
    spec = yaml.safe_load(text)["entry_points"]
    if list(spec) != list(ENTRY_POINTS):
        return f"entry points: MLproject has {list(spec)}, the declaration {list(ENTRY_POINTS)}"
    for entry_point, params in ENTRY_POINTS.items():
        given = spec[entry_point].get("parameters") or {}
        names, declared = list(given), [p.name for p in params]
        for i in range(max(len(names), len(declared))):
            ours = names[i] if i < len(names) else None
            theirs = declared[i] if i < len(declared) else None
            if ours != theirs:
                return (f"{entry_point}: parameter #{i + 1} is {ours!r} in MLproject but {theirs!r} in "
                        "the declaration")
        command = " ".join(spec[entry_point]["command"].split())
        wanted = f"python -m recsys {COMMANDS[entry_point][0]} "
        if not command.startswith(wanted):
            return f"{entry_point}: the command {command[:40]!r}... does not start with {wanted!r}"
        for p in params:
            kind, default = given[p.name].get("type"), given[p.name].get("default")
            if kind != p.mlproject_type:
                return f"{entry_point}.{p.name}: MLproject type {kind!r}, declared {p.mlproject_type!r}"
            if str(default) != p.render():
                return f"{entry_point}.{p.name}: MLproject default {default!r}, declared {p.render()!r}"
            if f"{p.cli_option} {{{p.name}}}" not in command:
                return f"{entry_point}.{p.name}: the command does not pass {{{p.name}}} as {p.cli_option}"
    return None


def test_mlproject_agrees_with_the_declaration():
    assert mlproject_mismatch((ROOT / "MLproject").read_text()) is None, \
        mlproject_mismatch((ROOT / "MLproject").read_text())


@pytest.mark.parametrize("old, new, named", [
    ('reg_param: {type: string, default: "0.1"}', 'reg_param: {type: string, default: "0.2"}',
     "als.reg_param: MLproject default '0.2', declared '0.1'"),
    ('n_hashes: {type: string, default: "128"}', 'n_hashes: {type: int, default: "128"}',
     "twins.n_hashes: MLproject type 'int', declared 'string'"),
    ('      force: {type: string, default: "false"}\n', "",
     "promote: parameter #3 is None in MLproject but 'force' in the declaration"),
    ("--max-evals {max_evals}", "--max-eval {max_evals}",
     "als_search.max_evals: the command does not pass {max_evals} as --max-evals"),
])
def test_the_mlproject_check_names_the_first_mismatch(old, new, named):
    text = (ROOT / "MLproject").read_text()
    assert text.count(old) == 1
    assert mlproject_mismatch(text.replace(old, new)) == named


def test_cli_options_are_the_declaration():
    for entry_point, params in ENTRY_POINTS.items():
        command = cli.commands[COMMANDS[entry_point][0]]
        options = [o for o in command.params if o.name != "help"]
        got = [(o.name, o.opts, o.default, o.multiple) for o in options]
        want = [(p.name, [p.cli_option], () if p.multiple else p.render(), p.multiple) for p in params]
        assert got == want, entry_point


def test_jobs_take_their_defaults_from_the_declaration():
    from recsys import jobs

    for entry_point, params in ENTRY_POINTS.items():
        job = getattr(jobs, COMMANDS[entry_point][0].replace("-", "_"))
        defaults = {name: p.default for name, p in inspect.signature(job).parameters.items()}
        assert defaults == {p.name: p.default for p in params}, entry_point
