"""The test split's clips as waves, for the stages that build recordings of them (timeline, mixtures)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from a2i_core.core.audio_io import decode
from a2i_core.core.manifest import clip_sources

log = logging.getLogger(__name__)


def test_clips(candidates: Path, audio: Path) -> list[tuple[str, str, np.ndarray]]:
    """(clip_id, prompt, wave) of each test clip with one label (a clip of several labels has no one reference)."""
    table = pd.read_parquet(candidates, columns=["clip_id", "prompt", "split"])
    test = table[table["split"] == "test"]
    labels = test.groupby("clip_id")["prompt"].nunique()
    single = test[test["clip_id"].isin(labels[labels == 1].index)].drop_duplicates("clip_id")
    skipped = len(labels) - len(single)
    if skipped:
        log.info("%d test clips with more than one label left out of the timelines: no single reference", skipped)
    prompts = dict(zip(single["clip_id"], single["prompt"], strict=True))
    return [(clip_id, prompts[clip_id], decode(source)) for clip_id, source in clip_sources(audio)
            if clip_id in prompts]
