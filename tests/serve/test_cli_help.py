"""The CLI describes itself: every option of every command has help, and its default is shown (issue 16)."""

from __future__ import annotations

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
