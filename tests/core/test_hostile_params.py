"""Hostile params and workspaces (issue 13, items 7 and 8): every key is validated on every `dvc repro`, and the
demo commits only the files it manages."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from a2i_core.core.params import ParamsError, params_from_dict
from a2i_core.offline import workspace as ws
from a2i_core.offline.workspace import tool_env
from tests.conftest import OFFLINE_PROFILE, ROOT


def _repro(workspace: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=workspace, env=tool_env(), capture_output=True,
                          text=True)


@pytest.fixture(scope="module")
def repo(demo_workspace, tmp_path_factory) -> Path:
    """A copy of the demo's whole repository (git, DVC cache, lock): a repro there is up to date until params change."""
    copy = tmp_path_factory.mktemp("params") / "ws"
    shutil.copytree(demo_workspace[0], copy, symlinks=True)
    return copy


@pytest.mark.e2e
@pytest.mark.parametrize("edit,key", [
    (lambda p: p.update(trian={"lr": 0.1}), "trian"),  # a misspelled section: no stage declares it
    (lambda p: p.update(notes="x"), "notes"),
    (lambda p: p["render"].update(stepz=3), "render.stepz"),
])
def test_an_unknown_key_stops_dvc_repro_with_one_line(repo, edit, key):
    params = YAML(typ="safe", pure=True).load((repo / "params.yaml").read_text())
    original = (repo / "params.yaml").read_text()
    edit(params)
    with open(repo / "params.yaml", "w") as f:
        YAML().dump(params, f)
    try:
        result = _repro(repo)
    finally:
        (repo / "params.yaml").write_text(original)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out  # before: "Data and pipelines are up to date."
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and re.match(rf"error: params\.yaml: {re.escape(key)}: unknown key", errors[0]), out
    assert "Traceback" not in out


@pytest.mark.e2e
def test_an_unchanged_params_file_reruns_nothing(repo):
    result = _repro(repo)
    ran = re.findall(r"Running stage '([^']+)'", result.stdout)
    assert result.returncode == 0 and ran == ["sources"], result.stdout + result.stderr  # sources always runs


def test_the_demo_commits_only_what_it_manages(tmp_path):
    # Before: `git add -A` committed whatever lay in the workspace, a cookies file included.
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "cookies.txt").write_text("# Netscape HTTP Cookie File\n.youtube.com\tTRUE\t/\tTRUE\t0\tSID\tsecret\n")
    (workspace / "notes").mkdir()
    (workspace / "notes" / "todo.md").write_text("mine\n")
    ws.prepare(workspace, [OFFLINE_PROFILE], ROOT)
    (workspace / "data").mkdir()
    (workspace / "data" / ".gitignore").write_text("/candidates.parquet\n")  # as DVC writes beside an output
    (workspace / "metrics").mkdir()
    (workspace / "metrics" / "data.json").write_text("{}\n")
    ws.commit(workspace, "a run")
    ws.commit(workspace, "nothing new: no empty commit, no error")

    tracked = subprocess.run(["git", "ls-files"], cwd=workspace, capture_output=True, text=True,
                             check=True).stdout.split()
    assert "cookies.txt" not in tracked and "notes/todo.md" not in tracked
    assert {"params.yaml", "dvc.yaml", ".gitignore", "data/.gitignore", "metrics/data.json",
            "stages/check_params.py"} <= set(tracked)
    log = subprocess.run(["git", "log", "--format=%s"], cwd=workspace, capture_output=True, text=True, check=True)
    assert log.stdout.split("\n")[:2] == ["a run", "a2i workspace: pipeline code and params"]


@pytest.mark.parametrize("template", ["an image of {name} {0}", "{name} {__class__}", "{name} {"])
def test_a_prompt_template_with_other_fields_is_one_line(raw_params, template):
    # Before: a template other than "{name}" passed params and raised IndexError/KeyError inside ingest.
    raw_params["data"]["prompt_template"] = template
    with pytest.raises(ParamsError, match=r"^params: data\.prompt_template: \{name\} is its only field"):
        params_from_dict(raw_params)
