"""The offline demo's machinery is apart from the real pipeline: in a project whose dvc.yaml is the real one, editing
anything under a2i_core/offline reruns no stage, checked by DVC itself on a copy of the project."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from ruamel.yaml import YAML

from tests.conftest import ROOT
from tests.helpers import dvc
from tests.test_dvc_deps import outputs


def _dvc(cwd: Path, *args: str) -> str:
    return dvc(cwd, *args).stdout


def _status(cwd: Path) -> str:
    """`dvc status` without `sources`, which is always changed (only running it tells whether local files did): ""
    when every other stage is up to date."""
    return _dvc(cwd, "status").replace("sources:\n\talways changed\n", "").strip()


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text() + line)


def test_editing_the_offline_package_reruns_nothing_in_a_real_model_project(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    for name in ("dvc.yaml", "params.yaml", "stages", "a2i_core"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy2)(ROOT / name, project / name)
    assert "stabilityai/" in (project / "params.yaml").read_text()  # the committed params name real models
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    _dvc(project, "init", "-q")
    # Every stage as if it had run: its outputs in place, then recorded in dvc.lock without running anything.
    stages = YAML(typ="safe", pure=True).load((project / "dvc.yaml").read_text())["stages"]
    for stage in stages.values():
        for out in outputs(stage):
            path = project / out
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.suffix:
                path.write_text("made\n")
            else:
                path.mkdir(exist_ok=True)
                (path / "part").write_text("made\n")
    for stage in stages.values():  # files other stages read inside an output folder (data/sources/data.json)
        for dep in stage.get("deps", []):
            if not (project / dep).exists() and (project / dep).parent.is_dir():
                (project / dep).write_text("made\n")
    _dvc(project, "commit", "-f", "-q")
    assert _status(project) == ""

    for module in sorted((project / "a2i_core" / "offline").glob("*.py")):
        _append(module, "# edited\n")
    _append(project / "stages" / "offline.dvc.yaml", "# edited\n")
    _append(project / "stages" / "offline_encoders.py", "# edited\n")
    assert _status(project) == ""

    # The same check sees an edit to code the real stages run.
    _append(project / "a2i_core" / "audio" / "vggish.py", "# edited\n")
    changed = _status(project)
    assert "audio_encoder:" in changed and "embed_audio:" in changed and "encoders:" not in changed
