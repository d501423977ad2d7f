"""(audio embedding, prompt embedding) pairs, joined by id, never by row position.

Pairs are indexed, not materialised: each pair holds its row in the clip-level audio features and its row in the
unique-prompt targets, and those matrices are held once. 2 M pairs of a few hundred prompts cost two integer
indices a pair, not 2048 floats (16 GB) plus the sequence tokens. The per-pair views (``pooled``, ``audio``,
``frames``, ``tokens``) gather on demand: for evaluation splits and chosen clips, never for a whole training set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from a2i_core.audio.features import AUDIO_KIND, load_audio_embeddings
from a2i_core.core import shards
from a2i_core.core.candidates import CANDIDATES_KIND
from a2i_core.core.errors import A2IError
from a2i_core.diffusion.prompt_embeddings import TEXT_KIND, load_text_features, text_provenance
from a2i_core.mapper.model import pad_frames

if TYPE_CHECKING:
    from a2i_core.mapper.model import AudioToSD3Mapper

log = logging.getLogger(__name__)


@dataclass
class ClipFrames:
    """Every clip's per-example embeddings end to end, at most ``max_frames`` each (all a mapper reads)."""

    values: np.ndarray  # (R, 128) float32: clip c's frames are values[offsets[c] : offsets[c + 1]]
    offsets: np.ndarray  # (C + 1,) int64, in the clip order of Pairs.clip_audio

    def of(self, clips: np.ndarray) -> list[np.ndarray]:
        """The frames (n_i, 128) of each clip row in ``clips``: views, not copies."""
        return [self.values[self.offsets[c] : self.offsets[c + 1]] for c in clips]


@dataclass
class Pairs:
    frame: pd.DataFrame  # clip_id, label, prompt, split: one row per pair
    clip_row: np.ndarray  # (n,) int64: each pair's row in clip_audio (and clip_frames)
    prompt_row: np.ndarray  # (n,) int64: each pair's row in prompts, prompt_pooled (and prompt_tokens)
    clip_audio: np.ndarray  # (C, 128) float32: each clip's mean embedding, once per clip
    prompts: list[str]  # every prompt once (the retrieval candidates)
    prompt_pooled: np.ndarray  # (K, P) float32: each prompt's pooled embedding
    provenance: dict[str, Any]  # the audio features' and text features' parts of a provenance record
    clip_frames: ClipFrames | None = None  # each clip's frames (frames input)
    prompt_tokens: np.ndarray | None = None  # (K, N, D) as stored (float16): each prompt's first sequence tokens

    def __len__(self) -> int:
        return len(self.frame)

    def subset(self, split: str) -> Pairs:
        """The pairs of one data split (train, val, test, heldout; an eval set's folds)."""
        return self.take(np.flatnonzero((self.frame["split"] == split).to_numpy()))

    def take(self, rows: np.ndarray) -> Pairs:
        """The pairs at positions ``rows``, sharing the clip and prompt matrices (nothing per pair is copied)."""
        return replace(self, frame=self.frame.iloc[rows].reset_index(drop=True), clip_row=self.clip_row[rows],
                       prompt_row=self.prompt_row[rows])

    # Per-pair views, gathered on demand: for small splits (evaluation, rendering), never a whole training set.
    @property
    def audio(self) -> np.ndarray:
        """(n, 128) each pair's clip mean."""
        return self.clip_audio[self.clip_row]

    @property
    def pooled(self) -> np.ndarray:
        """(n, P) each pair's target pooled embedding."""
        return self.prompt_pooled[self.prompt_row]

    @property
    def tokens(self) -> np.ndarray | None:
        """(n, N, D) float32 each pair's target first sequence tokens, when loaded."""
        return None if self.prompt_tokens is None else self.prompt_tokens[self.prompt_row].astype(np.float32)

    def padded_frames(self) -> tuple[np.ndarray, np.ndarray]:
        """(n, T, 128) frames and (n, T) mask; the stored frames are already cut at max_frames."""
        frames = self.clip_frames.of(self.clip_row)
        if not frames:
            return np.zeros((0, 0, self.clip_frames.values.shape[1]), np.float32), np.zeros((0, 0), bool)
        return pad_frames(frames, max(len(f) for f in frames))

    def inputs(self, kind: str) -> tuple[np.ndarray, np.ndarray | None]:
        """The mapper's input: clip means, or (frames, mask)."""
        return (self.audio, None) if kind == "mean" else self.padded_frames()

    def targets(self, with_tokens: bool) -> np.ndarray:
        """(n, P) or (n, P + N * D): what the mapper predicts."""
        if not with_tokens:
            return self.pooled
        return np.concatenate([self.pooled, self.tokens.reshape(len(self.frame), -1)], axis=1)

    def mean_pooled(self) -> np.ndarray:
        """(P,) float32 the mean target pooled embedding over these pairs, from how often each prompt occurs."""
        counts = np.bincount(self.prompt_row, minlength=len(self.prompts)).astype(np.float64)  # (K,)
        return (counts @ self.prompt_pooled.astype(np.float64) / max(len(self.frame), 1)).astype(np.float32)


def join_pairs(candidates: pd.DataFrame, clip_ids: list[str], prompts: list[str]
               ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The candidates whose clip has audio features, and each one's row in ``clip_ids`` and in ``prompts``."""
    clip_index, prompt_index = pd.Index(clip_ids), pd.Index(prompts)
    for what, index in (("clip ids in the audio features", clip_index), ("prompts in the text features", prompt_index)):
        if not index.is_unique:
            raise A2IError(f"duplicate {what}, e.g. {index[index.duplicated()][0]!r}: rerun the stage that wrote them")
    has_audio = candidates["clip_id"].isin(clip_index)
    if (~has_audio).any():
        log.info("%d pairs skipped: their clip has no audio features (failed download or decode)", (~has_audio).sum())
    missing_prompts = set(candidates["prompt"]) - set(prompts)
    if missing_prompts:
        raise A2IError(f"{len(missing_prompts)} prompts have no text features, e.g. {sorted(missing_prompts)[0]!r}: "
                       "rerun embed_text")
    frame = candidates[has_audio].reset_index(drop=True)
    return (frame, clip_index.get_indexer(frame["clip_id"]).astype(np.int64),
            prompt_index.get_indexer(frame["prompt"]).astype(np.int64))


def load_frames(directory: str | Path, clip_ids: list[str], max_frames: int, width: int) -> ClipFrames:
    """The first ``max_frames`` frames of each clip in ``clip_ids``, end to end in that order. Reads a shard at a
    time into one preallocated array: the frames are never held twice, nor the frames past max_frames at all."""
    row = pd.Index(clip_ids)
    lengths = np.zeros(len(clip_ids), np.int64)
    for table in shards.iter_shards(directory, AUDIO_KIND, columns=["clip_id", "n_frames"]):
        rows = row.get_indexer(table["clip_id"].to_pylist())
        known = rows >= 0
        lengths[rows[known]] = np.minimum(table["n_frames"].to_numpy()[known], max_frames)
    offsets = np.concatenate([[0], np.cumsum(lengths)])  # (C + 1,)
    values = np.zeros((offsets[-1], width), np.float32)  # (R, 128)
    for table in shards.iter_shards(directory, AUDIO_KIND, columns=["clip_id", "frames"]):
        column = table["frames"].combine_chunks()
        source = shards.to_numpy(column.values)  # (frames in this shard, 128); the offsets index it
        offsets_in = column.offsets.to_numpy()
        starts, stored = offsets_in[:-1], np.diff(offsets_in)
        rows = row.get_indexer(table["clip_id"].to_pylist())
        known = rows >= 0
        rows, starts, stored = rows[known], starts[known], stored[known]
        take = lengths[rows]
        if np.any(np.minimum(stored, max_frames) != take):
            raise A2IError(f"{directory}: a clip's frames disagree with its n_frames: rerun embed_audio")
        # Clip j's first take[j] frames: source rows starts[j] + t -> values rows offsets[rows[j]] + t.
        t = np.arange(take.sum()) - np.repeat(np.cumsum(take) - take, take)
        values[np.repeat(offsets[rows], take) + t] = source[np.repeat(starts, take) + t]
    return ClipFrames(values, offsets)


def load_token_targets(directory: str | Path, prompts: list[str], dtype: np.dtype | None = np.float32) -> np.ndarray:
    """The stored first sequence tokens (n, N, D) of each prompt in ``prompts``, as ``dtype`` (None: as stored)."""
    table = shards.read_shards(directory, TEXT_KIND, columns=["prompt", "tokens"])
    row = {p: i for i, p in enumerate(table["prompt"].to_pylist())}
    tokens = shards.to_numpy(table["tokens"])[[row[p] for p in prompts]]
    return tokens if dtype is None else tokens.astype(dtype)


def load_pairs(candidates_path: str | Path, audio_dir: str | Path, text_dir: str | Path,
               frames: bool = False, tokens: bool = False, max_frames: int = 32) -> Pairs:
    candidates = shards.read_table(candidates_path, CANDIDATES_KIND,
                                   columns=["clip_id", "label", "prompt", "split"]).to_pandas()
    clip_ids, audio, audio_provenance = load_audio_embeddings(audio_dir)
    prompts, pooled = load_text_features(text_dir)
    frame, clip_row, prompt_row = join_pairs(candidates, clip_ids, prompts)
    pairs = Pairs(frame=frame, clip_row=clip_row, prompt_row=prompt_row,
                  clip_audio=audio.astype(np.float32, copy=False), prompts=prompts, prompt_pooled=pooled,
                  provenance={**audio_provenance, **text_provenance(text_dir)})
    if frames:
        pairs.clip_frames = load_frames(audio_dir, clip_ids, max_frames, audio.shape[1])
    if tokens:
        pairs.prompt_tokens = load_token_targets(text_dir, prompts, dtype=None)
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
