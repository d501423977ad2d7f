"""What every stage script shares: its paths, given on dvc.yaml's ``cmd`` line as ``--name PATH``."""

from __future__ import annotations

import argparse
from pathlib import Path


def stage_paths(*names: str, positional: tuple[str, ...] = ()) -> dict[str, Path | str]:
    """``--name PATH`` for each of ``names`` (all required), plus plain positional arguments; by name."""
    parser = argparse.ArgumentParser()
    for name in positional:
        parser.add_argument(name)
    for name in names:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=Path, required=True)
    return vars(parser.parse_args())
