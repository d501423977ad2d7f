"""The packages are the architecture. Each package's docstring says what it may import (``May import: core, audio.``,
and ``Never torch, ...`` for a package that must not load a model framework); these tests hold the code to those
lines, so the rules live in one place per package, where a reader of the package finds them."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.test_dvc_deps import imported_modules, module_file

LIBRARY = ROOT / "a2i_core"
PACKAGES = sorted(p.name for p in LIBRARY.iterdir() if (p / "__init__.py").is_file())
TOP_LEVEL_MODULES = sorted(p.stem for p in LIBRARY.glob("*.py") if p.name != "__init__.py")


def _rules(package: str) -> tuple[set[str], list[str]]:
    """(the packages ``package`` may import besides itself, the frameworks it must never import)."""
    doc = ast.get_docstring(ast.parse((LIBRARY / package / "__init__.py").read_text())) or ""
    found = re.search(r"^May import: (.+?)\.(?: Never (.+?)\.)?$", doc, re.M)
    assert found, f"a2i_core/{package}/__init__.py: its docstring says nothing of what it may import"
    allowed = set() if found.group(1).startswith("nothing") else {p.strip() for p in found.group(1).split(",")}
    unknown = allowed - set(PACKAGES)
    assert not unknown, f"a2i_core/{package}: may import unknown packages {sorted(unknown)}"
    never = re.split(r", | or ", found.group(2)) if found.group(2) else []
    return allowed, never


def _modules(package: str) -> list[str]:
    return sorted(".".join(p.relative_to(ROOT).with_suffix("").parts) for p in (LIBRARY / package).rglob("*.py"))


def _package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "a2i_core" and parts[1] in PACKAGES else None


def _project_imports(path) -> set[str]:
    return {m for m in imported_modules(path) if m.startswith("a2i_core.") and module_file(m) is not None}


def test_the_library_is_packages_with_a_handful_of_top_level_modules():
    assert {"core", "data", "audio", "diffusion", "mapper", "serve", "pipeline", "offline"} <= set(PACKAGES)
    assert TOP_LEVEL_MODULES == ["cli"]  # the program on top of every package


@pytest.mark.parametrize("package", PACKAGES)
def test_a_package_imports_only_what_its_docstring_allows(package):
    allowed, _ = _rules(package)
    wrong = []
    for module in _modules(package):
        for imported in _project_imports(module_file(module)):
            other = _package_of(imported)
            if other not in (None, package) and other not in allowed:
                wrong.append(f"{module} -> {imported}")
    assert not wrong, f"a2i_core/{package} may import only {sorted(allowed) or 'itself'}: {wrong}"


@pytest.mark.parametrize("package", [p for p in PACKAGES if _rules(p)[1]])
def test_a_package_that_must_not_load_a_framework_loads_none(package):
    _, never = _rules(package)
    # Imported for real, in a fresh interpreter: what its modules and everything they import bring in.
    code = (f"import importlib, json, sys\nfor m in {_modules(package)!r}: importlib.import_module(m)\n"
            f"print(json.dumps(sorted(m for m in {never!r} if m in sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(result.stdout.splitlines()[-1]) == [], f"a2i_core/{package} loads {result.stdout}"


def test_only_the_offline_stages_and_the_demo_command_reach_the_offline_package():
    reach = [str(p.relative_to(ROOT)) for p in [*LIBRARY.rglob("*.py"), *(ROOT / "stages").glob("*.py")]
             if _package_of(".".join(p.relative_to(ROOT).with_suffix("").parts)) != "offline"
             and any(_package_of(m) == "offline" for m in _project_imports(p))]
    assert sorted(reach) == ["a2i_core/cli.py", "stages/offline_audio_encoder.py", "stages/offline_encoders.py"]


def test_the_inference_path_loads_no_data_pipeline_training_or_offline_module():
    listing = "print(json.dumps(sorted(m for m in sys.modules if m.startswith('a2i_core'))))"
    code = f"import json, sys\nimport a2i_core.serve.generate, a2i_core.serve.app, a2i_core.cli\n{listing}"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = json.loads(result.stdout.splitlines()[-1])
    assert "a2i_core.serve.generate" in loaded and "a2i_core.mapper.model" in loaded
    assert [m for m in loaded if _package_of(m) in ("data", "pipeline", "offline")] == []
    training = ("a2i_core.mapper.pairs", "a2i_core.mapper.train", "a2i_core.mapper.evaluate")
    assert [m for m in loaded if m in training] == []


def test_no_import_cycles():
    modules = [m for p in PACKAGES for m in _modules(p)] + [f"a2i_core.{m}" for m in TOP_LEVEL_MODULES]
    graph = {m: {i for i in _project_imports(module_file(m)) if i != m} for m in modules}
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for nxt in graph.get(module, ()):
            assert state.get(nxt) != "open", f"import cycle: {' -> '.join(path + [module, nxt])}"
            if nxt not in state:
                visit(nxt, path + [module])
        state[module] = "done"

    for module in graph:
        if module not in state:
            visit(module, [])
