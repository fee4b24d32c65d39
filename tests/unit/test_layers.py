"""The package's layering, checked from the source: imports run down the layers, never up, and
only ``mlops``, ``jobs`` and the served pyfunc import mlflow."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "recsys"

#: What each part of the package may import from the rest of recsys (itself always allowed).
#: Library subpackages sit below ``mlops`` and ``jobs``; ``entry_points`` declares parameters
#: from the library's configs; ``cli`` parses arguments and calls ``jobs``.
ALLOWED = {
    "core": set(),
    "data": {"core"},
    "models": {"core"},
    "twins": {"core"},
    "evaluation": {"core", "models"},
    "search": {"core", "models"},
    "recommend": {"core", "evaluation", "models"},
    "mlops": {"core", "models", "search", "recommend"},  # logs what the library made
    "entry_points": {"core", "data", "models", "search", "twins"},
    "jobs": {"core", "data", "models", "twins", "evaluation", "search", "recommend", "mlops", "entry_points"},
    "cli": {"core", "entry_points", "jobs"},
    "__main__": {"cli"},
    "__init__": set(),
}
MLFLOW_ALLOWED = {"mlops", "jobs"}
SERVED_PYFUNC = PACKAGE / "recommend" / "serving.py"  # loaded alone by MLflow: imports no recsys


def _part(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path):
    """(line, top module name) of every import in the file, function-local ones included."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "recsys":
                for alias in node.names:
                    yield node.lineno, f"recsys.{alias.name}"
            else:
                yield node.lineno, node.module


def _violations():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        part, where = _part(path), path.relative_to(PACKAGE.parent)
        for line, module in _imports(path):
            names = module.split(".")
            if names[0] == "mlflow" and part not in MLFLOW_ALLOWED and path != SERVED_PYFUNC:
                found.append(f"{where}:{line} imports {module} (only mlops/, jobs/, the served pyfunc)")
            if names[0] != "recsys" or len(names) < 2:
                continue
            if path == SERVED_PYFUNC:
                found.append(f"{where}:{line} imports {module} (the served pyfunc must import no recsys)")
            elif names[1] != part and names[1] != "__version__" and names[1] not in ALLOWED[part]:
                found.append(f"{where}:{line}: {part} imports {module} (allowed: {sorted(ALLOWED[part])})")
    return found


def test_every_part_of_the_package_has_a_layer():
    parts = {_part(p) for p in PACKAGE.rglob("*.py")}
    assert parts <= set(ALLOWED), f"add {sorted(parts - set(ALLOWED))} to ALLOWED"


def test_imports_run_down_the_layers_and_only_mlops_jobs_and_serving_import_mlflow():
    assert _violations() == []


def test_the_check_catches_an_upward_import(tmp_path, monkeypatch):
    bad = PACKAGE / "core" / "_layer_probe_tmp.py"
    bad.write_text("from recsys.jobs import split\nimport mlflow\n")
    try:
        found = _violations()
    finally:
        bad.unlink()
    assert any("core imports recsys.jobs" in v for v in found)
    assert any("imports mlflow" in v for v in found)


@pytest.mark.parametrize("root", ["tests", "experiments"])
def test_tests_and_experiments_import_no_private_recsys_name(root):
    bad = []
    for path in sorted((PACKAGE.parent / root).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("recsys"):
                bad += [f"{path.name}:{node.lineno} {node.module}.{a.name}" for a in node.names
                        if a.name.startswith("_")]
    assert bad == []


def test_recsys_top_level_holds_only_the_entry_modules_and_subpackages():
    modules = {p.name for p in PACKAGE.glob("*.py")}
    assert modules == {"__init__.py", "__main__.py", "cli.py", "entry_points.py"}
