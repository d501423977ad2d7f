"""Stage scripts fail with one clear line, not a traceback, and write nothing half-done."""

import os
import subprocess
import sys

from tests.conftest import ROOT


def _run_stage(name: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", f"stages.{name}"], cwd=cwd, env=env, capture_output=True, text=True)


def test_bad_param_stops_the_stage_with_one_line(tmp_path):
    text = (ROOT / "profiles" / "offline.yaml").read_text().replace("lr: 0.001", "lr: fast")
    (tmp_path / "params.yaml").write_text(text)
    result = _run_stage("ingest", tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == "error: params.yaml: train.lr: expected float, got str 'fast'"
    assert not (tmp_path / "data").exists()


def test_missing_input_names_the_stage_to_run(tmp_path):
    (tmp_path / "params.yaml").write_text((ROOT / "profiles" / "offline.yaml").read_text())
    result = _run_stage("train", tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "data/candidates.parquet: not found" in result.stderr


def test_cli_help():
    result = subprocess.run([sys.executable, "-m", "a2i_core.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "demo" in result.stdout
