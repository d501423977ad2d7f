"""The timeline stage's evaluation recordings: seeded concatenations of test clips with boundaries known to the
sample (neighbours of different classes, same-class neighbours, short events, silence gaps), and their files.

A clip's prompt labels all of it: the reference is what was put where, not what a detector could hear.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from a2i_core.core.audio_io import write_wav
from a2i_core.core.errors import A2IError
from a2i_core.core.params import TimelineEvalParams
from a2i_core.core.skipped import Skipped
from a2i_core.timeline.events import Event, write_csv

log = logging.getLogger(__name__)
# How one clip follows the previous one: another class, the same class (one event: no boundary is audible), or
# another class after a silence gap.
JUNCTIONS = ("different", "same", "gap")
REFERENCE_SCORE = 1.0  # a reference event is certain


@dataclass
class Recording:
    """One evaluation recording: mono float32 audio and its reference events, which tile it."""

    name: str
    wave: np.ndarray  # (samples,) float32
    events: list[Event]
    sample_rate: int


@dataclass(frozen=True)
class _Piece:
    """A stretch of a recording: a clip's samples under its prompt, or silence (prompt None)."""

    prompt: str | None
    wave: np.ndarray  # (samples,) float32


def build_recordings(clips: list[tuple[str, str, np.ndarray]], cfg: TimelineEvalParams,
                     sample_rate: int) -> list[Recording]:
    """``cfg.recordings`` recordings of ``cfg.events`` test clips (clip_id, prompt, wave) each, end to end.

    Seeded, and the same whatever order ``clips`` come in. Across the set, the junctions between clips are a
    balanced, shuffled mix of JUNCTIONS, and each recording cuts one clip to ``cfg.short_seconds``.
    """
    by_class, _ = usable_clips(clips, cfg, sample_rate)
    if len(by_class) < 2:
        raise A2IError(f"timeline evaluation: needs test clips of at least 2 classes at least "
                       f"{cfg.short_seconds:g} s long, got {len(by_class)}")
    rng = np.random.default_rng(cfg.seed)
    junctions = _junctions(rng, cfg)  # (recordings, events - 1)
    return [_recording(f"timeline-{r:02d}", list(junctions[r]), by_class, rng, cfg, sample_rate)
            for r in range(cfg.recordings)]


def usable_clips(clips: list[tuple[str, str, np.ndarray]], cfg: TimelineEvalParams,
                 sample_rate: int) -> tuple[dict[str, list[np.ndarray]], dict[str, int]]:
    """Clips by prompt (both sorted, so the input's order does not matter) and the skipped ones counted by reason:
    clips shorter than a short event, not mono finite audio, or labelled with several prompts (the other label
    would be heard where the reference says only one)."""
    skipped = Skipped("timeline evaluation")
    prompts: dict[str, set[str]] = defaultdict(set)
    for clip_id, prompt, _ in clips:
        prompts[clip_id].add(prompt)
    by_class: dict[str, list[np.ndarray]] = defaultdict(list)
    seen: set[str] = set()
    for clip_id, prompt, wave in sorted(clips, key=lambda clip: (clip[0], clip[1])):
        reason = _unusable(prompts[clip_id], np.asarray(wave), round(cfg.short_seconds * sample_rate))
        if reason or clip_id in seen:
            skipped.add(reason or "repeated_clip", clip_id)
            continue
        seen.add(clip_id)
        by_class[prompt].append(np.asarray(wave, np.float32))
    counts = skipped.done()
    if counts:
        log.info("timeline evaluation: %d of %d test clips not used: %s", sum(counts.values()), len(clips), counts)
    return dict(sorted(by_class.items())), counts


def _unusable(prompts: set[str], wave: np.ndarray, short_samples: int) -> str:
    if len(prompts) > 1:
        return "several_labels"
    if wave.ndim != 1 or not np.isfinite(wave).all():
        return "not_mono_finite_audio"
    return "shorter_than_short_seconds" if wave.size < short_samples else ""


def _junctions(rng: np.random.Generator, cfg: TimelineEvalParams) -> np.ndarray:
    """Every junction of the set: each kind as often as the others (give or take one), shuffled, so that all kinds
    appear once there are three junctions."""
    total = cfg.recordings * (cfg.events - 1)
    kinds = np.resize(np.array(JUNCTIONS), total)
    return rng.permutation(kinds).reshape(cfg.recordings, cfg.events - 1)


def _recording(name: str, junctions: list[str], by_class: dict[str, list[np.ndarray]], rng: np.random.Generator,
               cfg: TimelineEvalParams, sample_rate: int) -> Recording:
    prompts = _prompts(junctions, list(by_class), rng)
    short = _short_slot(junctions, rng)
    pieces: list[_Piece] = []
    for slot, prompt in enumerate(prompts):
        if slot and junctions[slot - 1] == "gap":
            pieces.append(_Piece(None, np.zeros(round(cfg.gap_seconds * sample_rate), np.float32)))
        wave = by_class[prompt][int(rng.integers(len(by_class[prompt])))]
        pieces.append(_Piece(prompt, _middle(wave, round(cfg.short_seconds * sample_rate)) if slot == short else wave))
    return Recording(name, np.concatenate([p.wave for p in pieces]), _reference(pieces, sample_rate), sample_rate)


def _prompts(junctions: list[str], classes: list[str], rng: np.random.Generator) -> list[str]:
    """Each slot's class: the first at random, then the same as the previous one or another, as the junction says."""
    prompts = [classes[int(rng.integers(len(classes)))]]
    for kind in junctions:
        others = [c for c in classes if c != prompts[-1]]
        prompts.append(prompts[-1] if kind == "same" else others[int(rng.integers(len(others)))])
    return prompts


def _short_slot(junctions: list[str], rng: np.random.Generator) -> int:
    """The slot cut short: one with no same-class neighbour where there is one, so that it stays an event of its
    own instead of merging into a longer one."""
    slots = len(junctions) + 1
    alone = [s for s in range(slots) if "same" not in junctions[max(s - 1, 0):s + 1]]
    choices = alone or list(range(slots))
    return choices[int(rng.integers(len(choices)))]


def _middle(wave: np.ndarray, samples: int) -> np.ndarray:
    """The clip's middle ``samples``: where a clip's sound most often is (its ends may fade in or out)."""
    start = (wave.size - samples) // 2
    return wave[start:start + samples]


def _reference(pieces: list[_Piece], sample_rate: int) -> list[Event]:
    """Pieces as events timed to the sample; neighbours of one class are one event."""
    events: list[Event] = []
    position = 0  # in samples: times are each computed once from an exact count
    for piece in pieces:
        start, end = position / sample_rate, (position + piece.wave.size) / sample_rate
        if events and events[-1].label == piece.prompt:
            events[-1] = Event(events[-1].start, end, piece.prompt, REFERENCE_SCORE)
        else:
            events.append(Event(start, end, piece.prompt, REFERENCE_SCORE))
        position += piece.wave.size
    return events


def save_recording(recording: Recording, folder: str | Path) -> None:
    """``folder/audio.wav`` (16-bit PCM) and ``folder/reference.csv``, each written whole or not at all."""
    folder = Path(folder)
    write_wav(folder / "audio.wav", recording.wave, recording.sample_rate)
    write_csv(recording.events, folder / "reference.csv")
