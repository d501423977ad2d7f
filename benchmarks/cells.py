"""What the benchmarks that measure each cell in a fresh process share: memory readings, and running one cell.

A cell runs as ``python <benchmark> --child ...`` and prints its figures as one JSON line last; the parent reads it.
A fresh process per cell keeps one cell's allocations out of the next one's high-water mark.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path


def resident_mib(field: str = "VmHWM") -> float:
    """This process's resident memory from /proc (VmHWM: its high-water mark; VmRSS: now), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    if field == "VmHWM":  # no /proc (macOS): the same mark from getrusage
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return float("nan")


def run_cell(script: str, args: list[str], what: str) -> dict:
    """Run ``script`` with ``args`` in a fresh interpreter; the JSON it printed last."""
    result = subprocess.run([sys.executable, script, *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{what} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])
