"""download: every candidate clip as 16 kHz mono audio, a manifest row per clip, and the counts by status."""

from __future__ import annotations

import logging
from pathlib import Path

from a2i_core.core import shards
from a2i_core.core.candidates import CANDIDATES_KIND, RELEASED_SOURCE
from a2i_core.core.files import write_json
from a2i_core.core.params import DownloadParams
from a2i_core.data.download import download_clips

log = logging.getLogger(__name__)


def download(cfg: DownloadParams, candidates: Path, audio: Path, metrics: Path, release: str | None = None) -> dict:
    """With ``release`` (audio_encoder.release), AudioSet clips are not downloaded: embed_audio imports their
    released embeddings instead."""
    frame = shards.read_table(candidates, CANDIDATES_KIND).to_pandas()
    skip = frozenset({RELEASED_SOURCE} if release is not None else ())
    skipped = int(frame.loc[frame["source"].isin(skip), "clip_id"].nunique())
    if skipped:
        log.info("%d AudioSet clips not downloaded: their features come from audio_encoder.release (%s)", skipped,
                 release)
    counts: dict = download_clips(frame, audio, cfg, skip_sources=skip)
    if skipped:
        counts["from-release"] = skipped
    write_json(metrics, counts)
    return counts
