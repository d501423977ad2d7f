"""(audio embedding, prompt embedding) pairs, joined by id, never by row position."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from a2i_core import shards
from a2i_core.audio_features import AUDIO_KIND, load_audio_embeddings
from a2i_core.candidates import CANDIDATES_KIND
from a2i_core.errors import A2IError
from a2i_core.mapper import pad_frames
from a2i_core.text import TEXT_KIND, load_text_features, text_provenance

if TYPE_CHECKING:
    from a2i_core.mapper import AudioToSD3Mapper

log = logging.getLogger(__name__)


@dataclass
class Pairs:
    frame: pd.DataFrame  # clip_id, label, prompt, split: one row per pair
    audio: np.ndarray  # (n, 128) clip means
    pooled: np.ndarray  # (n, P) target pooled embeddings
    prompts: list[str]  # every prompt (the retrieval candidates)
    prompt_pooled: np.ndarray  # (K, P)
    provenance: dict[str, Any]  # the audio features' and text features' parts of a provenance record
    frames: np.ndarray | None = None  # (n, T, 128), zero-padded
    mask: np.ndarray | None = None  # (n, T), True where a frame is real
    tokens: np.ndarray | None = None  # (n, N, D) target first sequence tokens

    def subset(self, split: str) -> Pairs:
        """The pairs of one data split (train, val, test, heldout; an eval set's folds)."""
        keep = (self.frame["split"] == split).to_numpy()

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[keep]

        return replace(self, frame=self.frame[keep].reset_index(drop=True), audio=self.audio[keep],
                       pooled=self.pooled[keep], frames=pick(self.frames), mask=pick(self.mask),
                       tokens=pick(self.tokens))

    def inputs(self, kind: str) -> tuple[np.ndarray, np.ndarray | None]:
        """The mapper's input: clip means, or (frames, mask)."""
        return (self.audio, None) if kind == "mean" else (self.frames, self.mask)

    def targets(self, with_tokens: bool) -> np.ndarray:
        """(n, P) or (n, P + N * D): what the mapper predicts."""
        if not with_tokens:
            return self.pooled
        return np.concatenate([self.pooled, self.tokens.reshape(len(self.tokens), -1)], axis=1)


def load_frames(directory: str | Path, clip_ids: list[str]) -> list[np.ndarray]:
    """Each clip's per-example embeddings (n_i, 128), in the order of ``clip_ids``."""
    table = shards.read_shards(directory, AUDIO_KIND, columns=["clip_id", "frames"])
    column = table["frames"].combine_chunks()
    values = shards.to_numpy(column.flatten())  # (sum n_i, 128)
    offsets = column.offsets.to_numpy()
    row = {cid: i for i, cid in enumerate(table["clip_id"].to_pylist())}
    return [values[offsets[row[c]] : offsets[row[c] + 1]] for c in clip_ids]


def load_token_targets(directory: str | Path, prompts: list[str]) -> np.ndarray:
    """The stored first sequence tokens (n, N, D) of each prompt in ``prompts``, as float32."""
    table = shards.read_shards(directory, TEXT_KIND, columns=["prompt", "tokens"])
    row = {p: i for i, p in enumerate(table["prompt"].to_pylist())}
    tokens = shards.to_numpy(table["tokens"])
    return tokens[[row[p] for p in prompts]].astype(np.float32)


def load_pairs(candidates_path: str | Path, audio_dir: str | Path, text_dir: str | Path,
               frames: bool = False, tokens: bool = False, max_frames: int = 32) -> Pairs:
    candidates = shards.read_table(candidates_path, CANDIDATES_KIND,
                                   columns=["clip_id", "label", "prompt", "split"]).to_pandas()
    clip_ids, audio, audio_provenance = load_audio_embeddings(audio_dir)
    prompts, pooled = load_text_features(text_dir)
    audio_row = pd.Series(np.arange(len(clip_ids)), index=clip_ids)
    prompt_row = pd.Series(np.arange(len(prompts)), index=prompts)
    has_audio = candidates["clip_id"].isin(audio_row.index)
    if (~has_audio).any():
        log.info("%d pairs skipped: their clip has no audio features (failed download or decode)", (~has_audio).sum())
    missing_prompts = set(candidates["prompt"]) - set(prompts)
    if missing_prompts:
        raise A2IError(f"{len(missing_prompts)} prompts have no text features, e.g. {sorted(missing_prompts)[0]!r}: "
                         "rerun embed_text")
    frame = candidates[has_audio].reset_index(drop=True)
    pairs = Pairs(
        frame=frame,
        audio=audio[audio_row[frame["clip_id"]].to_numpy()].astype(np.float32),
        pooled=pooled[prompt_row[frame["prompt"]].to_numpy()],
        prompts=prompts,
        prompt_pooled=pooled,
        provenance={**audio_provenance, **text_provenance(text_dir)},
    )
    if frames:
        pairs.frames, pairs.mask = pad_frames(load_frames(audio_dir, frame["clip_id"].tolist()), max_frames)
    if tokens:
        pairs.tokens = load_token_targets(text_dir, frame["prompt"].tolist())
    return pairs


def load_pairs_for(mapper: AudioToSD3Mapper, candidates_path: str | Path, audio_dir: str | Path,
                   text_dir: str | Path, tokens: bool | None = None) -> Pairs:
    """The pairs as ``mapper`` takes them (clip means or frames; token targets if it predicts tokens, or as
    ``tokens`` says), once the audio features are checked to come from the VGGish it was trained on."""
    config = mapper.config
    pairs = load_pairs(candidates_path, audio_dir, text_dir, frames=config.input == "frames",
                       tokens=config.tokens > 0 if tokens is None else tokens, max_frames=config.max_frames)
    mapper.config.provenance.check(f"features in {audio_dir} and {text_dir}", **pairs.provenance)
    return pairs
