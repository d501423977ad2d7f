"""The CLI describes itself: every option of every command has help, and its default is shown (issue 16); it starts
without the frameworks, and the app starts past a params mistake it does not read (issue 26)."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from importlib.metadata import version

import pytest
import torch
import typer

from a2i_core.cli import app
from a2i_core.core.devices import resolve_dtype

COMMANDS = ["generate", "app", "demo"]


def _help(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "a2i_core.cli", *args, "--help"], capture_output=True, text=True,
                            env={"COLUMNS": "200", "PATH": "", "TERM": "dumb"})
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_has_help_and_its_default_shows(command):
    # Before: "[default: ...]" in help texts was read as rich markup and vanished ("Trained mapper ."), and
    # --seed, --steps, --guidance and --size had no help at all.
    text = _help(command)
    options = [p for p in typer.main.get_command(app).commands[command].params
               if isinstance(p, typer.core.TyperOption)]
    assert options
    for option in options:
        flag = option.opts[0]
        line = re.search(rf"^\s+{re.escape(flag)}\b.*?(?=^\s+--|\Z)", text, re.M | re.S)
        assert line, f"{command} {flag}: not in the help"
        described = " ".join(line.group(0).split())
        assert option.help, f"{command} {flag}: no help"
        assert option.required or "[default:" in described, f"{command} {flag}: no default shown: {described!r}"


def test_version():
    result = subprocess.run([sys.executable, "-m", "a2i_core.cli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == f"a2i {version('a2i')}"


def test_dtype_auto_is_the_default_and_chooses_for_the_device_without_a_warning(caplog):
    # Before: bfloat16 was the default, and every CPU run warned "dtype bfloat16 asked for on CPU: using float32".
    assert "[default: auto]" in " ".join(_help("generate").split())
    with caplog.at_level(logging.WARNING):
        assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert not caplog.records
    with caplog.at_level(logging.WARNING):
        assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.float32  # an explicit ask is still told
    assert "using float32" in caplog.text


def test_generate_takes_a_duration_cap_that_defaults_to_the_params():
    # Before: no cap at all; a header claiming 4 GB of audio was decoded for hours.
    described = " ".join(_help("generate").split())
    assert "--max-seconds <float> Each recording is heard up to here" in described
    assert "[default: the project's generate.max_seconds]" in described


# What `a2i --version` waited 2 to 5 s for before (issue 26), every command loading them at start.
FRAMEWORKS = ("torch", "diffusers", "transformers", "gradio", "pandas", "pyarrow", "numpy")


@pytest.mark.parametrize("args", [["--version"], ["generate", "--help"]])
def test_the_command_line_starts_without_the_frameworks(args):
    code = ("import json, sys\nimport a2i_core.cli\nloaded = [m for m in sys.argv[1:] if m in sys.modules]\n"
            f"try:\n    a2i_core.cli.app({args!r})\nexcept SystemExit:\n    pass\n"
            "print(json.dumps([loaded, [m for m in sys.argv[1:] if m in sys.modules]]))")
    result = subprocess.run([sys.executable, "-c", code, *FRAMEWORKS], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout.splitlines()[-1]) == [[], []]


def test_the_app_help_still_names_the_examples_limit():
    from a2i_core.serve.examples import MAX_EXAMPLES

    assert f"its first {MAX_EXAMPLES} audio files" in " ".join(_help("app").split())


def test_the_app_starts_past_a_params_mistake_it_does_not_read(tmp_path):
    # Issue 26. Before: `a2i app` refused "train.lr: expected float", which it never reads. Here it goes on to the
    # models (none in this project: the next line, without any server started).
    from ruamel.yaml import YAML

    from tests.conftest import ROOT

    yaml = YAML()
    raw = yaml.load((ROOT / "params.yaml").read_text())
    raw["train"]["lr"] = "fast"
    with open(tmp_path / "params.yaml", "w") as f:
        yaml.dump(raw, f)
    args = [sys.executable, "-m", "a2i_core.cli", "app", "--project", str(tmp_path), "--no-examples"]
    result = subprocess.run(args, capture_output=True, text=True)
    assert result.returncode == 1
    assert [line for line in result.stderr.splitlines() if line.startswith(("note:", "error:"))] == [
        f"note: {tmp_path}/params.yaml: train.lr: expected float, got str 'fast' (not read by the app)",
        f"error: {tmp_path}/models/mapper: no trained mapper here; pass --project DIR (a project after `dvc repro`), "
        "or run `make demo` and use --project .demo"]
    raw["render"]["size"] = 100
    with open(tmp_path / "params.yaml", "w") as f:
        yaml.dump(raw, f)
    refused = subprocess.run(args, capture_output=True, text=True)
    assert refused.returncode == 1
    assert refused.stderr.strip() == f"error: {tmp_path}/params.yaml: render.size: must be a multiple of 16"
