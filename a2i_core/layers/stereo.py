"""Where each sound of a clip is heard from: the clip heard again channel by channel, each sound's level difference
between the channels over the windows it is present in (its pan, -1 left .. 1 right), and each layer's place from it.

A mono file puts every sound in the middle; a file of more than two channels is matrixed to stereo first (ffmpeg's
standard matrix: ``audio_io.decode_stream``); a file whose channels cancel in the mono mix (opposite phase) is still
heard from each channel, and said so.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from a2i_core.core.audio_io import SAMPLE_RATE, channel_layout, decode_stream
from a2i_core.core.errors import A2IError
from a2i_core.layers.answer import Layer

# The mono mix this much quieter than the louder channel: the channels cancel in it. A sound in one channel only
# leaves the mix 6 dB down, two unrelated sounds 3 dB: cancelling is the only way to lose 20.
OPPOSITE_PHASE_DB = 20.0
SILENT_DB = -200.0  # window_levels' floor, and the level of a channel with no windows
SIDES = ("left", "right")

WindowScores = Callable[[np.ndarray], np.ndarray]  # a channel's window embeddings (n, D) -> scores (n, K)
Hear = Callable[..., Any]  # hear(path, levels=list, channel=c) -> .frames (n, D), .seconds, .notes; A2IError


@dataclass
class Stereo:
    """A clip heard channel by channel: each channel's window embeddings and levels (a silent channel has none)."""

    left: np.ndarray  # (n_L, D)
    right: np.ndarray  # (n_R, D)
    left_db: np.ndarray  # (n_L,) dBFS per window
    right_db: np.ndarray  # (n_R,)
    seconds: float  # how long the clip is, as heard
    notes: list[str] = field(default_factory=list)  # what placement did that the user should know
    layout: str | None = None  # ffmpeg's name of the file's layout ("mono", "stereo", "5.1(side)"); None: unread
    opposite_phase: bool = False  # the channels cancel in the mono mix: only they can be heard
    heard_notes: list[str] = field(default_factory=list)  # hear's own notes (length, cap), once each

    def channels(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each channel's (frames (n, D), levels (n,)), left then right."""
        return [(self.left, self.left_db), (self.right, self.right_db)]


def amplitude(levels_db: np.ndarray) -> np.ndarray:
    """Window levels in dBFS (n,) as amplitudes (n,): 0 dBFS is 1, silence (-200) is nothing."""
    return np.power(10.0, np.asarray(levels_db, np.float64) / 20)


def power_db(levels_db: np.ndarray) -> float:
    """The level of windows together (their mean power) in dBFS; silence for none."""
    if len(levels_db) == 0:
        return SILENT_DB
    return float(10 * np.log10(max(np.mean(np.power(10.0, np.asarray(levels_db, np.float64) / 10)), 1e-20)))


def hear_channels(hear: Hear, path: Path) -> Stereo:
    """``path`` heard channel by channel (``hear(path, levels=..., channel=c)``), with the notes placement owes the
    user. A channel ``hear`` finds silent counts as silent (no windows); any other A2IError (too short, undecodable)
    is raised, as is silence in both. A mono file is heard once: both its channels are it."""
    layout = channel_layout(path)
    count, name = layout if layout is not None else (None, None)
    if count == 1:
        frames, levels, seconds, notes = _hear_one(hear, path, 0)
        if frames is None:  # a mono file's channel is its mono mix
            raise A2IError(f"{path}: silent: there is nothing to hear")
        return Stereo(frames, frames, levels, levels, seconds, ["mono: every sound goes to the middle"], name,
                      heard_notes=notes)
    heard = [_hear_one(hear, path, c) for c in (0, 1)]
    if all(frames is None for frames, *_ in heard):
        raise A2IError(f"{path}: both channels are silent: there is nothing to hear")
    width = next(frames.shape[1] for frames, *_ in heard if frames is not None)
    sides: list[tuple[np.ndarray, np.ndarray]] = []
    notes = []
    if count is not None and count > 2:
        notes.append(f"{name}: {count} channels downmixed to stereo (ffmpeg's standard matrix) for placement")
    for side, (frames, levels, _, _) in zip(SIDES, heard, strict=True):
        if frames is None:
            notes.append(f"its {side} channel is silent")
            sides.append((np.zeros((0, width), np.float32), np.zeros(0, np.float32)))  # (0, D), (0,)
        else:
            sides.append((frames, levels))
    seconds = max(s for _, _, s, _ in heard)
    loudest = max(power_db(levels) for _, levels in sides)
    opposite = mono_db(path, round(seconds * SAMPLE_RATE)) < loudest - OPPOSITE_PHASE_DB
    if opposite:
        notes.append("its channels are in opposite phase: they cancel in a mono mix, so the sounds are heard from "
                     "each channel")
    heard_notes = list(dict.fromkeys(note for *_, more in heard for note in more))  # the same for both: once each
    (left, left_db), (right, right_db) = sides
    return Stereo(left, right, left_db, right_db, seconds, notes, name, opposite, heard_notes)


def _hear_one(hear: Hear, path: Path, channel: int) -> tuple[np.ndarray | None, np.ndarray, float, list[str]]:
    """One channel's frames (n, D) and levels (n,), seconds and notes; frames None when hear finds it silent."""
    levels: list[np.ndarray] = []
    try:
        heard = hear(path, levels=levels, channel=channel)
    except A2IError as err:
        if "silent" in str(err).replace(str(path), ""):  # hear's "PATH: silent (...)"; not a file named so
            return None, np.zeros(0, np.float32), 0.0, []
        raise
    frames = np.asarray(heard.frames)
    joined = np.concatenate(levels) if levels else np.zeros(0, np.float32)
    if len(joined) != len(frames):
        raise ValueError(f"hear gave {len(frames)} windows but {len(joined)} levels for channel {channel}")
    return frames, joined, float(heard.seconds), list(heard.notes)


def mono_db(path: Path, max_samples: int) -> float:
    """The level in dBFS of the file's mono mix over its first ``max_samples`` (what was heard of it)."""
    square_sum, held = 0.0, 0
    with contextlib.closing(decode_stream(path)) as stream:  # closing early stops ffmpeg
        for chunk in stream:
            part = chunk[: max(0, max_samples - held)].astype(np.float64)  # float32 sums lose digits over an hour
            square_sum += float(np.dot(part, part))
            held += part.size
            if held >= max_samples:
                break
    return float(10 * np.log10(max(square_sum / max(held, 1), 1e-20)))


def _window_scores(window_scores: WindowScores, frames: np.ndarray) -> np.ndarray:
    scores = np.asarray(window_scores(frames), np.float64)  # (n, K)
    if scores.ndim != 2 or len(scores) != len(frames):
        raise ValueError(f"window_scores gave {scores.shape} for {len(frames)} windows; wanted (windows, sounds)")
    return scores


def pans(stereo: Stereo, window_scores: WindowScores, indices: list[int]) -> list[float | None]:
    """Each sound's direction (``indices``: rows of the prompt bank), -1 left .. 1 right: its level difference
    between the channels over the windows where it is present, weighted by how present it is. With s_c(t) its score
    in channel c's window t (negative scores count as absent) and a_c(t) that window's amplitude, A_c = sum_t s_c(t)
    a_c(t) and pan = (A_R - A_L) / (A_R + A_L); None for a sound present in neither channel."""
    present = []  # each channel's A_c for every sound asked of
    for frames, levels in stereo.channels():
        if len(frames) == 0:  # silent: the sound is nowhere in it
            present.append(np.zeros(len(indices)))
            continue
        scores = np.clip(_window_scores(window_scores, frames)[:, indices], 0, None)  # (n, len(indices))
        present.append(amplitude(levels) @ scores)  # (len(indices),)
    left, right = present
    out: list[float | None] = []
    for a_left, a_right in zip(left, right, strict=True):
        total = a_left + a_right
        out.append(None if total <= 0 else float((a_right - a_left) / total))
    return out


def place(layers: list[Layer], pans: list[float | None], centre: float) -> tuple[list[Layer], list[str]]:
    """Each layer (in the order given) placed from its pan: nearer the middle than ``centre`` (0 .. 1), in the
    middle (x = 0.5); otherwise x = 0.5 + 0.5 pan, kept within [1/(2n), 1 - 1/(2n)] for n layers so that a region
    of the image's 1/n centred there never reaches past its edge (one layer: always the middle). A sound with no pan
    goes to the middle, with a note. The pan is recorded on the layer; y is kept."""
    if len(layers) != len(pans):
        raise ValueError(f"{len(pans)} pans for {len(layers)} layers")
    margin = 1 / (2 * max(len(layers), 1))
    placed, notes = [], []
    for layer, pan in zip(layers, pans, strict=True):
        if pan is None:
            notes.append(f"{layer.label}: heard in neither channel: drawn in the middle")
            placed.append(replace(layer, x=0.5, pan=None))
            continue
        x = 0.5 if abs(pan) < centre else min(max(0.5 + 0.5 * pan, margin), 1 - margin)
        placed.append(replace(layer, x=x, pan=pan))
    return placed, notes
