"""Dependencies run one way: the inference path never loads the data pipeline, data acquisition never loads a model
framework, and no module imports itself back through another."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT
from tests.test_dvc_deps import imported_modules, module_file

PIPELINE_ONLY = ("a2i_core.data.ingest", "a2i_core.data.sources", "a2i_core.data.download", "a2i_core.data.fetch_clip", "a2i_core.core.manifest",
                 "a2i_core.mapper.pairs", "a2i_core.mapper.evaluate", "a2i_core.core.candidates", "a2i_core.pipeline", "a2i_core.mapper.train",
                 "a2i_core.diffusion.prepare", "a2i_core.audio.prepare", "a2i_core.offline.tiny")


def _loaded_after(statement: str) -> list[str]:
    listing = "print(json.dumps(sorted(m for m in sys.modules if m.startswith('a2i_core'))))"
    code = f"import json, sys\n{statement}\n{listing}"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.splitlines()[-1])


def test_the_inference_path_loads_no_pipeline_module():
    loaded = _loaded_after("import a2i_core.serve.generate, a2i_core.mapper.artifact, a2i_core.serve.app, a2i_core.cli")
    assert "a2i_core.serve.generate" in loaded and "a2i_core.mapper.model" in loaded
    assert [m for m in loaded if m.startswith(PIPELINE_ONLY)] == []


def _project_imports(name: str) -> set[str]:
    found = set()
    for imported in imported_modules(module_file(name)):
        if module_file(imported) is not None and imported.startswith("a2i_core."):
            found.add(imported)
    return found


def _modules() -> list[str]:
    return sorted(".".join(p.relative_to(ROOT).with_suffix("").parts) for p in (ROOT / "a2i_core").rglob("*.py")
                  if p.name != "__init__.py")


def test_no_import_cycles():
    graph = {m: _project_imports(m) - {m} for m in _modules()}
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


def test_data_acquisition_and_tables_know_no_model_framework():
    for name in ("a2i_core.core.shards", "a2i_core.core.candidates", "a2i_core.data.ingest", "a2i_core.data.download", "a2i_core.data.fetch_clip",
                 "a2i_core.core.manifest", "a2i_core.core.packs", "a2i_core.core.audio_io", "a2i_core.data.sources.audioset",
                 "a2i_core.data.sources.local", "a2i_core.data.sources.synthetic", "a2i_core.core.params"):
        frameworks = {m for m in imported_modules(module_file(name)) if m.split(".")[0] in ("torch", "diffusers",
                                                                                            "transformers")}
        assert not frameworks, f"{name} imports {sorted(frameworks)}"
