"""dvc.yaml (and the offline demo's stages/offline.dvc.yaml) declare, for each stage, the code it runs: the stage
script's transitive a2i_core imports.

The deps are written by hand, so dvc.yaml keeps reading as the story of the data; this test computes each stage
script's import closure from the source (every import statement, lazy ones inside functions included) and fails
on a module the stage imports but does not declare, and on a declared file or folder it no longer imports. A package
folder is declared where the stage runs at least half of that package's modules (a change anywhere in it reruns the
stage); elsewhere the modules are listed. Paths on each cmd line must be the stage's deps, outs or params files.
"""

from __future__ import annotations

import ast
import shlex
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.conftest import ROOT

PACKAGES = ("a2i_core", "stages")
PIPELINES = {name: YAML(typ="safe", pure=True).load((ROOT / name).read_text())
             for name in ("dvc.yaml", "stages/offline.dvc.yaml")}


def module_file(name: str) -> Path | None:
    """The source file of a dotted module name inside this project, or None for third-party modules."""
    if name.split(".")[0] not in PACKAGES:
        return None
    path = ROOT.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def _runtime_nodes(tree: ast.AST):
    """Every node, except those under ``if TYPE_CHECKING:`` (type checkers read them, Python never runs them)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            continue
        yield node
        yield from _runtime_nodes(node)


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return names


def has_code(path: Path) -> bool:
    """A package __init__ holding only a docstring cannot change what a stage does."""
    body = ast.parse(path.read_text()).body
    return any(not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)) for n in body)


def closure(script: Path) -> set[str]:
    """Project files (relative paths) that running ``script`` executes: its imports, theirs, and their packages."""
    seen, todo = set(), [script]
    while todo:
        path = todo.pop()
        rel = path.relative_to(ROOT).as_posix()
        if rel in seen:
            continue
        seen.add(rel)
        for name in imported_modules(path):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
                found = module_file(".".join(parts[:i]))
                if found is not None:
                    todo.append(found)
    return {p for p in seen if not (p.endswith("__init__.py") and not has_code(ROOT / p))}


def stage_entries():
    for file, pipeline in PIPELINES.items():
        for name, stage in pipeline["stages"].items():
            yield f"{file}:{name}", stage.get("do", stage)


def declared(stage: dict) -> list[str]:
    return [d for d in stage.get("deps", []) if d.startswith(PACKAGES)]


def covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("name,stage", list(stage_entries()), ids=[n for n, _ in stage_entries()])
def test_code_deps_are_the_import_closure(name, stage):
    module = shlex.split(stage["cmd"])[shlex.split(stage["cmd"]).index("-m") + 1]
    script = module_file(module)
    code = closure(script)
    deps = declared(stage)
    undeclared = sorted(p for p in code if not covered(p, deps))
    assert not undeclared, f"{name}: imports but does not declare {undeclared}"
    stale = sorted(d for d in deps if not any(covered(p, [d]) for p in code))
    assert not stale, f"{name}: declares {stale} but no longer imports them"
    for folder in (d for d in deps if (ROOT / d).is_dir()):
        modules = {str(p.relative_to(ROOT)) for p in (ROOT / folder).rglob("*.py") if has_code(p)}
        used = modules & code
        assert 2 * len(used) >= len(modules), (f"{name}: declares {folder}/ but runs only {len(used)} of its "
                                               f"{len(modules)} modules: list them instead")
    for file in (d for d in deps if (ROOT / d).is_file() and d.startswith("a2i_core/")):
        package = "/".join(file.split("/")[:2])
        modules = {str(p.relative_to(ROOT)) for p in (ROOT / package).rglob("*.py") if has_code(p)}
        assert 2 * len(modules & code) < len(modules), (f"{name}: runs most of {package}/ ({len(modules & code)} of "
                                                         f"{len(modules)} modules): declare the folder")


def outputs(stage: dict) -> list[str]:
    names = []
    for key in ("outs", "metrics", "plots"):
        for entry in stage.get(key, []):
            names.append(next(iter(entry)) if isinstance(entry, dict) else entry)
    return names


@pytest.mark.parametrize("name,stage", list(stage_entries()), ids=[n for n, _ in stage_entries()])
def test_cmd_paths_are_deps_or_outs(name, stage):
    args = shlex.split(stage["cmd"])
    paths = [args[i + 1] for i, a in enumerate(args) if a.startswith("--") and i + 1 < len(args)]
    assert paths, f"{name}: its cmd names no paths"
    params_files = [next(iter(p)) for p in stage.get("params", []) if isinstance(p, dict)]  # `- params.yaml:`
    known = [d for d in stage.get("deps", [])] + outputs(stage) + params_files
    missing = [p for p in paths if not any(k == p or k.startswith(p + "/") for k in known)]
    assert not missing, f"{name}: cmd paths {missing} are neither deps nor outs"


def test_the_walker_sees_lazy_and_package_imports_but_not_type_checking_ones():
    assert "a2i_core/serve/app.py" in closure(ROOT / "a2i_core" / "cli.py")  # imported inside a function
    assert "a2i_core/core/shards.py" in closure(ROOT / "a2i_core" / "pipeline" / "ingest.py")  # from ... import
    features = closure(ROOT / "a2i_core" / "audio" / "features.py")
    assert "a2i_core/core/audio_io.py" in features and "a2i_core/audio/encoder.py" not in features  # TYPE_CHECKING only
