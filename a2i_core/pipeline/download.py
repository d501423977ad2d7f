"""download: every candidate clip as 16 kHz mono audio, a manifest row per clip, and the counts by status."""

from __future__ import annotations

from pathlib import Path

from a2i_core import shards
from a2i_core.candidates import CANDIDATES_KIND
from a2i_core.download import download_clips
from a2i_core.files import write_json
from a2i_core.params import DownloadParams


def download(cfg: DownloadParams, candidates: Path, audio: Path, metrics: Path) -> dict[str, int]:
    frame = shards.read_table(candidates, CANDIDATES_KIND).to_pandas()
    counts = download_clips(frame, audio, cfg)
    write_json(metrics, counts)
    return counts
