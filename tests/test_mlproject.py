"""MLproject and the click commands agree: every parameter reaches its command and an option."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from recsys.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]


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
