"""download: every candidate clip as 16 kHz mono audio, a manifest row per clip, and the counts by status; with
download.frames, the source video's frame at each evaluated clip's midpoint too."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from a2i_core.core import shards
from a2i_core.core.candidates import CANDIDATES_KIND, HELDOUT, RELEASED_SOURCE
from a2i_core.core.files import write_json
from a2i_core.core.manifest import load_manifest
from a2i_core.core.params import DownloadParams
from a2i_core.data.download import download_clips
from a2i_core.data.fetch_frame import download_frames

log = logging.getLogger(__name__)
# The clips whose generated images are measured against their source's frame (IIS, FID, KID); an extra evaluation
# set's clips all have split "eval".
EVALUATED_SPLITS = ("test", HELDOUT, "eval")


def download(cfg: DownloadParams, candidates: Path, audio: Path, metrics: Path, frames: Path | None = None,
             release: str | None = None) -> dict:
    """With ``release`` (audio_encoder.release), AudioSet clips are not downloaded: embed_audio imports their
    released embeddings instead (their frames still are: the measures need them). With ``frames`` and
    ``cfg.frames``, the evaluated clips' frames go there, their counts under "frames"."""
    frame = shards.read_table(candidates, CANDIDATES_KIND).to_pandas()
    skip = frozenset({RELEASED_SOURCE} if release is not None else ())
    skipped = int(frame.loc[frame["source"].isin(skip), "clip_id"].nunique())
    if skipped:
        log.info("%d AudioSet clips not downloaded: their features come from audio_encoder.release (%s)", skipped,
                 release)
    counts: dict = download_clips(frame, audio, cfg, skip_sources=skip)
    if skipped:
        counts["from-release"] = skipped
    if frames is not None:
        Path(frames).mkdir(parents=True, exist_ok=True)  # a stage output, even when no frame is kept
        if cfg.frames:
            counts["frames"] = download_frames(evaluated_clips(frame, audio), Path(frames), cfg)
    write_json(metrics, counts)
    return counts


def evaluated_clips(candidates: pd.DataFrame, audio: Path) -> pd.DataFrame:
    """One row per clip of the evaluated splits, but those whose video is gone (its audio ``unavailable``: private,
    removed, 404): its frame would be one more request to fail the same way."""
    if "split" not in candidates:
        return candidates.iloc[:0]
    clips = candidates[candidates["split"].isin(EVALUATED_SPLITS)].drop_duplicates("clip_id")
    manifest = load_manifest(audio)
    gone = set(manifest.loc[manifest["status"] == "unavailable", "clip_id"])
    if gone & set(clips["clip_id"]):
        log.info("%d evaluated clips' frames not fetched: their videos are gone (audio unavailable)",
                 len(gone & set(clips["clip_id"])))
    return clips[~clips["clip_id"].isin(gone)]
