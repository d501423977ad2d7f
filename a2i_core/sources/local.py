"""Sources of local audio files: ESC-50 (its official layout) and any folder of recordings."""

from __future__ import annotations

import csv
import hashlib
import logging
import re
from pathlib import Path

import pandas as pd

from a2i_core.audio import AUDIO_SUFFIXES
from a2i_core.errors import A2IError
from a2i_core.fetch import local_copy
from a2i_core.sources.archive import extracted

log = logging.getLogger(__name__)
ESC50_COLUMNS = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]


def safe_id(text: str) -> str:
    """A clip id from a file path: allowed characters only, plus a short hash so that distinct paths stay distinct."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")[:60] or "clip"
    return f"{stem}_{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def esc50_root(location: str) -> Path:
    """A directory holding meta/esc50.csv: the given one, or the official archive downloaded and extracted."""
    path = local_copy(location)
    if path.is_file() and path.suffix == ".zip":
        path = extracted(path)
    found = next(iter(sorted(path.glob("**/meta/esc50.csv"))), None)
    if found is None:
        raise A2IError(f"{location}: no meta/esc50.csv inside (an ESC-50 copy or its archive was expected)")
    return found.parent.parent


def esc50_rows(location: str) -> pd.DataFrame:
    root = esc50_root(location)
    meta = pd.read_csv(root / "meta" / "esc50.csv")
    if list(meta.columns) != ESC50_COLUMNS:
        raise A2IError(f"{root}/meta/esc50.csv: columns {list(meta.columns)}, expected {ESC50_COLUMNS}")
    return pd.DataFrame({
        "clip_id": [safe_id(f) for f in meta["filename"]],
        # Takes of one source recording share a group, so no recording is in two splits.
        "group": meta["src_file"].astype(str),
        "label": meta["category"].astype(str),
        "name": meta["category"].str.replace("_", " "),
        "uri": [str((root / "audio" / f).resolve()) for f in meta["filename"]],
        "fold": meta["fold"].astype(int),  # the official 5 folds, kept for cross-validated evaluation
    })


def folder_rows(root: str, labels_csv: str | None) -> pd.DataFrame:
    base = Path(root)
    if not base.is_dir():
        raise A2IError(f"{root}: not a directory")
    if labels_csv:
        with open(labels_csv, newline="") as f:
            labelled = [(base / row["file"], row["label"]) for row in csv.DictReader(f)]
    else:
        files = sorted(p for p in base.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
        labelled = [(p, p.parent.name) for p in files if p.parent != base]
        skipped = [p for p in files if p.parent == base]
        if skipped:
            log.warning("%d files directly in %s have no <label>/ folder: skipped", len(skipped), root)
    if not labelled:
        raise A2IError(f"{root}: no labelled audio files found")
    relative = [str(p.relative_to(base)) if p.is_relative_to(base) else str(p) for p, _ in labelled]
    return pd.DataFrame({
        "clip_id": [safe_id(r) for r in relative],
        "group": [safe_id(r) for r in relative],
        "label": [label for _, label in labelled],
        "name": [label.replace("_", " ") for _, label in labelled],
        "uri": [str(p.resolve()) for p, _ in labelled],
    })
