"""(audio embedding, prompt embedding) training pairs, joined by id, never by row position."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from a2i_core import shards
from a2i_core.audio_features import load_audio_embeddings
from a2i_core.ingest import CANDIDATES_KIND
from a2i_core.text import load_text_features

log = logging.getLogger(__name__)


@dataclass
class Pairs:
    frame: pd.DataFrame  # clip_id, label, prompt, split: one row per pair
    audio: np.ndarray  # (n, 128) float32
    target: np.ndarray  # (n, P) float32
    prompts: list[str]  # every prompt (the retrieval candidates)
    prompt_pooled: np.ndarray  # (K, P)
    audio_meta: dict[str, str]

    def split(self, name: str) -> Pairs:
        keep = (self.frame["split"] == name).to_numpy()
        return Pairs(self.frame[keep].reset_index(drop=True), self.audio[keep], self.target[keep],
                     self.prompts, self.prompt_pooled, self.audio_meta)


def load_pairs(candidates_path: str | Path, audio_dir: str | Path, text_dir: str | Path) -> Pairs:
    candidates = shards.read_table(candidates_path, CANDIDATES_KIND,
                                   columns=["clip_id", "label", "prompt", "split"]).to_pandas()
    clip_ids, audio, audio_meta = load_audio_embeddings(audio_dir)
    prompts, pooled = load_text_features(text_dir)
    audio_row = pd.Series(np.arange(len(clip_ids)), index=clip_ids)
    prompt_row = pd.Series(np.arange(len(prompts)), index=prompts)
    has_audio = candidates["clip_id"].isin(audio_row.index)
    if (~has_audio).any():
        log.info("%d pairs skipped: their clip has no audio features (failed download or decode)", (~has_audio).sum())
    missing_prompts = set(candidates["prompt"]) - set(prompts)
    if missing_prompts:
        raise ValueError(f"{len(missing_prompts)} prompts have no text features, e.g. {sorted(missing_prompts)[0]!r}: "
                         "rerun embed_text")
    frame = candidates[has_audio].reset_index(drop=True)
    return Pairs(
        frame=frame,
        audio=audio[audio_row[frame["clip_id"]].to_numpy()].astype(np.float32),
        target=pooled[prompt_row[frame["prompt"]].to_numpy()],
        prompts=prompts,
        prompt_pooled=pooled,
        audio_meta=audio_meta,
    )
