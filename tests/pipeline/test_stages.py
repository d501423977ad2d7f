"""Stage scripts fail with one clear line, not a traceback, and write nothing half-done."""

import os
import subprocess
import sys

from ruamel.yaml import YAML

from tests.conftest import ROOT


def _run_stage(name: str, cwd, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", f"stages.{name}", *args], cwd=cwd, env=env, capture_output=True,
                          text=True)


def _write_params(path, raw: dict) -> None:
    with open(path, "w") as f:
        YAML().dump(raw, f)


def test_bad_param_stops_the_stage_with_one_line(tmp_path, raw_params):
    raw_params["train"]["lr"] = "fast"
    _write_params(tmp_path / "params.yaml", raw_params)
    result = _run_stage("ingest", tmp_path, "--candidates", "data/candidates.parquet", "--metrics", "m.json")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: params.yaml: train.lr: expected float, got str 'fast'"
    assert not (tmp_path / "data").exists()


def test_missing_input_names_the_stage_to_run(tmp_path, raw_params):
    _write_params(tmp_path / "params.yaml", raw_params)
    result = _run_stage("train", tmp_path, "--candidates", "data/candidates.parquet", "--audio-features", "a",
                        "--text-features", "t", "--out", "m", "--metrics", "m.json", "--curves", "c",
                        "--curves-chart", "c.svg")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "data/candidates.parquet: not found" in result.stderr


def test_cli_help():
    result = subprocess.run([sys.executable, "-m", "a2i_core.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "demo" in result.stdout
