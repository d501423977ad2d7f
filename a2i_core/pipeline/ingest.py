"""ingest: source metadata -> the candidates table (one row per clip and label) and its counts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from a2i_core.core import shards
from a2i_core.core.candidates import CANDIDATES_KIND, candidates_table, data_counts
from a2i_core.core.files import write_json
from a2i_core.core.params import DataParams
from a2i_core.data.ingest import build_candidates


def ingest(data: DataParams, candidates: Path, metrics: Path, split: str | None = None) -> pd.DataFrame:
    """Write the candidates and their counts; ``split`` puts every row in that one split (an evaluation set)."""
    frame, report = build_candidates(data)
    if split is not None:
        frame["split"] = split
    shards.write_table(candidates_table(frame), candidates, CANDIDATES_KIND)
    write_json(metrics, {**data_counts(frame), **report})
    return frame
