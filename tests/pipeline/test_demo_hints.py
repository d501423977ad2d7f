"""The demo as a tired user meets it (issue 16): its hints work as printed, and a rerun says when it replaced edits."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess

from a2i_core.cli import EXP_SHOW, _dvc_command
from a2i_core.offline import workspace as ws
from tests.conftest import OFFLINE_PROFILE, ROOT
from tests.helpers import dvc, manual_commands, run

BARE_PATH = "/usr/local/bin:/usr/bin:/bin"  # a shell where .venv was never activated


def test_the_printed_dvc_command_works_without_activating_the_environment(demo_workspace, monkeypatch):
    # Before: the hint said `cd .demo && dvc exp run ...`, and dvc is only in .venv/bin.
    ws_dir, output = demo_workspace
    assert "try a variant: cd " in output and "exp run -S train.lr=0.0003" in output
    monkeypatch.setenv("PATH", BARE_PATH)
    dvc = _dvc_command()
    assert dvc != "dvc"  # not on this PATH: the hint names the one beside a2i's Python
    result = subprocess.run(["bash", "-c", f"cd {ws_dir} && {dvc} metrics show"], capture_output=True, text=True,
                            env={**os.environ, "PATH": BARE_PATH})
    assert result.returncode == 0 and "top1" in result.stdout, result.stderr[-2000:]


def test_a_new_demo_says_when_it_replaced_edited_params_and_keeps_them(tmp_path, caplog):
    # Before: a second `make demo` silently reset edits made to .demo/params.yaml.
    workspace = ws.prepare(tmp_path / "ws", [OFFLINE_PROFILE], ROOT)
    params = workspace / "params.yaml"
    edited = params.read_text().replace("lr: 0.001", "lr: 0.0005")
    assert edited != params.read_text()
    params.write_text(edited)
    with caplog.at_level(logging.WARNING, logger="a2i_core.offline.workspace"):
        ws.prepare(workspace, [OFFLINE_PROFILE], ROOT)
    assert (workspace / ws.EDITED_PARAMS).read_text() == edited and "lr: 0.001" in params.read_text()
    assert "differed from a fresh merge" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="a2i_core.offline.workspace"):
        ws.prepare(workspace, [OFFLINE_PROFILE], ROOT)  # nothing edited since: nothing said
    assert not caplog.records


def test_every_hint_is_true_where_it_is_printed(demo_workspace, tmp_path):
    # Before: the demo ended with DVC's "Use `dvc push` to send your updates to remote storage" (the workspace has no
    # remote) and suggested a plain `dvc exp show` (174 columns).
    _, output = demo_workspace
    assert ws.PUSH_HINT not in output and "Running stage 'train'" in output  # DVC's own lines still shown
    assert r"exp show --only-changed --drop '.*/|params\.yaml' --keep '.*(top1|aic)$'" in output and EXP_SHOW in output
    assert manual_commands("dvc exp show --only-changed") == [f"dvc {EXP_SHOW}"]  # README shows the same one


def test_dvc_plots_show_leaves_the_workspace_clean(demo_workspace, tmp_path):
    # Before: `dvc plots show` left dvc_plots/ untracked in the workspace's git.
    copy = tmp_path / "ws"
    shutil.copytree(demo_workspace[0], copy, symlinks=True)
    dvc(copy, "plots", "show")
    assert (copy / "dvc_plots" / "index.html").is_file()
    assert run(copy, "git", "status", "--porcelain").stdout == ""
