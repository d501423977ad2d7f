"""What many tests share: running a command, DVC or the CLI as a user would, a free port, the manual's text."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

from a2i_core.offline.workspace import tool_env

ROOT = Path(__file__).resolve().parent.parent
MANUAL = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def run(cwd: Path, *args: str, env: dict[str, str] | None = None, ok: bool = True) -> subprocess.CompletedProcess:
    """``args`` run in ``cwd`` with this interpreter's tools first on PATH; with ``ok``, a failure shows its output."""
    result = subprocess.run(list(args), cwd=cwd, env=tool_env() if env is None else env, capture_output=True,
                            text=True)
    if ok:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def dvc(cwd: Path, *args: str, env: dict[str, str] | None = None, ok: bool = True) -> subprocess.CompletedProcess:
    return run(cwd, sys.executable, "-m", "dvc", *args, env=env, ok=ok)


def a2i(cwd: Path, *args: str, env: dict[str, str] | None = None, ok: bool = True) -> subprocess.CompletedProcess:
    """The ``a2i`` command line, as installed."""
    return run(cwd, sys.executable, "-m", "a2i_core.cli", *args, env=env, ok=ok)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def manual_section(heading: str) -> str:
    """The text under ``heading`` (a whole Markdown heading line, e.g. ``### Train on your own sounds``) in README.md
    or docs/, up to the next heading of the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    for path in MANUAL:
        text = path.read_text()
        if f"\n{heading}\n" in f"\n{text}":
            body = f"\n{text}".split(f"\n{heading}\n", 1)[1]
            end = re.search(rf"^#{{1,{level}}} ", body, re.M)
            return body[: end.start()] if end else body
    raise AssertionError(f"no section {heading!r} in README.md or docs/")


def manual_commands(prefix: str) -> list[str]:
    """The lines of README.md and docs/ that start with ``prefix`` (a command a reader copies), comments cut."""
    lines = [line.split("  #")[0].strip() for path in MANUAL for line in path.read_text().splitlines()]
    return [line for line in dict.fromkeys(lines) if line.startswith(prefix)]


# What end-to-end tests that retrain need of the label head, the mixtures and the timeline stages: that they rerun
# and write every output, not the demo's figures (README's figures are the demo workspace's own, untouched). About
# a minute and a half less per retraining workflow.
LIGHT_EVALUATION = {"layers": {"head": {"mixtures": 50}, "eval": {"per_level": 2}},
                    "timeline": {"eval": {"recordings": 2, "events": 3}}}


def lighten(params: dict) -> dict:
    """``params`` (as read from a workspace's params.yaml) with :data:`LIGHT_EVALUATION` in place, in place."""
    def merge(into: dict, values: dict) -> None:
        for key, value in values.items():
            if isinstance(value, dict):
                merge(into[key], value)
            else:
                into[key] = value

    merge(params, LIGHT_EVALUATION)
    return params
