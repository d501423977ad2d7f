"""Two-source mixtures of labelled clips: the label head learns from them (training clips, a level drawn at random) and
the mixtures stage is measured on them (test clips at fixed level ratios, and hard-panned stereo pairs).

Levels are loudness ratios, measured as Scaper sets event levels: integrated loudness (ITU-R BS.1770, pyloudnorm).
A mixture's truth is the two prompts that were put in it, whatever a listener could still hear of the quieter one.
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyloudnorm

from a2i_core.core.audio_io import SAMPLE_RATE, write_wav
from a2i_core.core.errors import A2IError
from a2i_core.core.params import MixturesParams

log = logging.getLogger(__name__)
MIN_SECONDS = 0.5  # a shorter clip is left out: under one VGGish example, and too little to hear in a mixture
PEAK = 0.9  # a mixture whose peak passes this is scaled down (both sources together), never up
SHOWN_IDS = 5  # left-out clips named in the log line; the rest only counted
TRIES_PER_MIXTURE = 20  # draws of a pair before giving up on one mixture (where clips overlap in silence)

# A clip's audio, or what decodes it: training draws a few thousand pairs from a split that need not fit in memory.
Wave = np.ndarray | Callable[[], np.ndarray]


@dataclass
class Mixture:
    """Two clips of different classes at a loudness ratio, mono; or hard-panned (first left, second right), stereo."""

    name: str  # file-safe: mix-0dB-007, mix-m6dB-007, pan-007
    first: str  # the first clip's prompt
    second: str  # the second clip's prompt, ``db`` dB louder (BS.1770) than the first
    db: float
    panned: bool
    wave: np.ndarray  # (n,) float32, or (n, 2) when panned
    sample_rate: int = SAMPLE_RATE


@functools.cache
def _meter(sample_rate: int) -> pyloudnorm.Meter:
    return pyloudnorm.Meter(sample_rate)  # builds its K-weighting filters: once per rate


def loudness(wave: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness in LUFS (ITU-R BS.1770, pyloudnorm) of a (n,) or (n, channels) wave; -inf when silent
    (every block under BS.1770's -70 LUFS gate), and callers leave such a wave out."""
    wave = np.asarray(wave, np.float64)
    if wave.shape[0] == 0:
        return float("-inf")
    if not np.isfinite(wave).all():
        raise A2IError("loudness: the wave holds values that are not finite")
    meter = _meter(sample_rate)
    block = round(meter.block_size * sample_rate)
    if wave.shape[0] < block:
        # BS.1770 needs one 400 ms block. A whole number of repeats keeps the mean square BS.1770 measures (zero
        # padding would dilute it with silence and read a short sound as a quiet one).
        repeats = -(-block // wave.shape[0])
        wave = np.tile(wave, (repeats,) + (1,) * (wave.ndim - 1))
    return float(meter.integrated_loudness(wave))


def _gain(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def _levelled(first: np.ndarray, second: np.ndarray, db: float, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Both cut to the shorter (from their starts), the second scaled to ``db`` LU against the first."""
    n = min(len(first), len(second))
    a, b = np.asarray(first[:n], np.float64), np.asarray(second[:n], np.float64)
    la, lb = loudness(a, sample_rate), loudness(b, sample_rate)
    if not (np.isfinite(la) and np.isfinite(lb)):
        raise A2IError(f"cannot set a level ratio: the {'first' if not np.isfinite(la) else 'second'} sound is "
                       f"silent over the {n / sample_rate:.2f} s both share")
    return a, b * _gain(la - lb + db)


def _under_peak(wave: np.ndarray) -> np.ndarray:
    peak = float(np.abs(wave).max(initial=0.0))
    return (wave * (PEAK / peak) if peak > PEAK else wave).astype(np.float32)


def mix(first: np.ndarray, second: np.ndarray, db: float, sample_rate: int) -> np.ndarray:
    """(n,) float32: the two cut to the shorter, the second ``db`` dB louder (BS.1770) than the first, summed; the sum
    scaled down, both together, if its peak passes PEAK."""
    a, b = _levelled(first, second, db, sample_rate)
    return _under_peak(a + b)


def pan(first: np.ndarray, second: np.ndarray, sample_rate: int) -> np.ndarray:
    """(n, 2) float32: the first hard left, the second hard right, equally loud (BS.1770), with mix's peak rule."""
    a, b = _levelled(first, second, 0.0, sample_rate)
    return _under_peak(np.stack([a, b], axis=1))  # (n, 2)


def level_name(db: float) -> str:
    """A level ratio in a file name: 0dB, m6dB (minus 6), p3dB, m1.5dB."""
    sign = "" if db == 0 else ("m" if db < 0 else "p")
    return f"{sign}{abs(db):g}dB"


def usable_clips(clips: Sequence[tuple[str, str, Wave]], sample_rate: int | None,
                 what: str = "mixtures") -> tuple[dict[str, list[tuple[str, Wave]]], dict[str, list[str]]]:
    """Clips by prompt, (clip_id, wave) each, both sorted (the input's order does not matter), and the clip ids left
    out by reason: labelled with several prompts (a mixture's truth would miss one), repeated, and, given a
    ``sample_rate`` (waves in memory), not mono finite audio, shorter than MIN_SECONDS or silent. Logged in one line."""
    labels: dict[str, set[str]] = defaultdict(set)
    for clip_id, prompt, _ in clips:
        labels[clip_id].add(prompt)
    by_class: dict[str, list[tuple[str, Wave]]] = defaultdict(list)
    left_out: dict[str, list[str]] = defaultdict(list)
    seen: set[str] = set()
    for clip_id, prompt, wave in sorted(clips, key=lambda clip: (clip[0], clip[1])):
        reason = "several_labels" if len(labels[clip_id]) > 1 else "repeated" if clip_id in seen else ""
        if not reason and sample_rate is not None:
            reason = unusable(np.asarray(wave), sample_rate)
        if reason:
            left_out[reason].append(clip_id)
            continue
        seen.add(clip_id)
        by_class[prompt].append((clip_id, wave))
    if left_out:
        shown = [c for ids in left_out.values() for c in ids][:SHOWN_IDS]
        log.info("%s: left out %d clips: %s (%s%s)", what, sum(map(len, left_out.values())),
                 {k: len(v) for k, v in left_out.items()}, ", ".join(shown),
                 ", ..." if sum(map(len, left_out.values())) > len(shown) else "")
    return dict(sorted(by_class.items())), dict(left_out)


def unusable(wave: np.ndarray, sample_rate: int) -> str:
    """Why a clip cannot go into a mixture, or "" when it can."""
    return _broken(wave, sample_rate) or ("silent" if loudness(wave, sample_rate) == float("-inf") else "")


def _broken(wave: np.ndarray, sample_rate: int) -> str:
    """unusable's reasons that need no loudness measured."""
    if wave.ndim != 1 or not np.isfinite(wave).all():
        return "not_mono_finite_audio"
    return "shorter_than_0.5_s" if wave.size < MIN_SECONDS * sample_rate else ""


def _class_pairs(classes: list[str], rng: np.random.Generator) -> Iterator[tuple[str, str]]:
    """Class pairs without end, each in a random order: every unordered pair once per shuffled round, so a set of any
    size spreads over the pairs as evenly as it can (counts differ by at most one)."""
    pairs = list(itertools.combinations(classes, 2))
    while pairs:
        for k in rng.permutation(len(pairs)):
            a, b = pairs[int(k)]
            yield (a, b) if rng.random() < 0.5 else (b, a)


def _overlap_heard(a: np.ndarray, b: np.ndarray, sample_rate: int) -> bool:
    """Whether both clips make a sound over the samples they share (a mixture cuts them to the shorter)."""
    n = min(len(a), len(b))
    return bool(np.isfinite(loudness(a[:n], sample_rate)) and np.isfinite(loudness(b[:n], sample_rate)))


def build_mixtures(clips: list[tuple[str, str, np.ndarray]], cfg: MixturesParams, sample_rate: int) -> list[Mixture]:
    """For each of ``cfg.levels_db``, ``cfg.per_level`` mixtures of two clips (clip_id, prompt, wave) of different
    classes; then ``cfg.per_level`` hard-panned ones at 0 dB. The same pairs at every level and panned (a paired
    comparison), spread evenly over class pairs; seeded, and the same whatever order ``clips`` come in."""
    names = [level_name(db) for db in cfg.levels_db]
    repeated = next((db for db, name in zip(cfg.levels_db, names, strict=True) if names.count(name) > 1), None)
    if repeated is not None:
        raise A2IError(f"mixtures: levels_db lists {repeated:g} dB twice")
    by_class, _ = usable_clips(clips, sample_rate)
    if len(by_class) < 2:
        raise A2IError(f"mixtures: need usable clips of at least 2 classes, got {len(by_class)} (clips shorter than "
                       f"{MIN_SECONDS:g} s, silent, or of several labels are left out)")
    rng = np.random.default_rng(cfg.seed)
    pairs = _pairs(by_class, cfg.per_level, rng, sample_rate)
    out = [Mixture(f"mix-{name}-{k:03d}", pa, pb, float(db), False, mix(a, b, db, sample_rate), sample_rate)
           for db, name in zip(cfg.levels_db, names, strict=True) for k, (pa, a, pb, b) in enumerate(pairs)]
    out += [Mixture(f"pan-{k:03d}", pa, pb, 0.0, True, pan(a, b, sample_rate), sample_rate)
            for k, (pa, a, pb, b) in enumerate(pairs)]
    return out


def _pairs(by_class: dict[str, list[tuple[str, Wave]]], count: int, rng: np.random.Generator,
           sample_rate: int) -> list[tuple[str, np.ndarray, str, np.ndarray]]:
    """``count`` (first prompt, first wave, second prompt, second wave), both heard where they overlap."""
    pairs: list[tuple[str, np.ndarray, str, np.ndarray]] = []
    stream = _class_pairs(list(by_class), rng)
    for _ in range(count * TRIES_PER_MIXTURE):
        if len(pairs) == count:
            break
        pa, pb = next(stream)
        a = np.asarray(by_class[pa][int(rng.integers(len(by_class[pa])))][1], np.float32)
        b = np.asarray(by_class[pb][int(rng.integers(len(by_class[pb])))][1], np.float32)
        if _overlap_heard(a, b, sample_rate):
            pairs.append((pa, a, pb, b))
    if len(pairs) < count:
        raise A2IError(f"mixtures: only {len(pairs)} of {count} pairs are heard where they overlap (mostly silent "
                       "clips)")
    return pairs


def training_mixtures(clips: Sequence[tuple[str, str, Wave]], count: int, min_db: float, max_db: float, seed: int,
                      sample_rate: int) -> Iterator[tuple[np.ndarray, tuple[str, str]]]:
    """``count`` seeded mixtures (wave (n,) float32, (first prompt, second prompt)) of clips (clip_id, prompt, wave or
    what decodes it) of different classes, the second's level drawn uniformly in [min_db, max_db] dB against the
    first's. Classes are drawn evenly over class pairs (a rare class learns from as many mixtures as a common one).
    Lazy: a wave given as a callable is decoded when drawn, so memory holds one pair. A clip found unusable (short,
    silent, not mono) is dropped and never drawn again; if too few remain, fewer mixtures come, with a warning."""
    by_class, _ = usable_clips(clips, None, "training mixtures")
    if count and len(by_class) < 2:
        raise A2IError(f"training mixtures: need clips of at least 2 classes with one label each, got {len(by_class)}")
    rng = np.random.default_rng(seed)
    made, dropped = 0, 0
    stream = _class_pairs(list(by_class), rng)
    for _ in range(count * TRIES_PER_MIXTURE):
        if made == count or len(by_class) < 2:
            break
        pa, pb = next(stream)
        ia, ib = int(rng.integers(len(by_class[pa]))), int(rng.integers(len(by_class[pb])))
        db = float(rng.uniform(min_db, max_db))
        a, b = _wave(by_class[pa][ia][1]), _wave(by_class[pb][ib][1])
        # Short, broken or silent clips are dropped for good. Whole clips are measured only when a mixture of them
        # fails (mix measures the parts they share): most pairs cost two loudness measurements, not four.
        bad = [(p, i) for p, i, w in ((pa, ia, a), (pb, ib, b)) if _broken(w, sample_rate)]
        if not bad:
            try:
                wave = mix(a, b, db, sample_rate)
            except A2IError:  # silent over the samples both share
                bad = [(p, i) for p, i, w in ((pa, ia, a), (pb, ib, b)) if loudness(w, sample_rate) == float("-inf")]
                if not bad:
                    continue
        for prompt, index in bad:  # two classes: one index each
            by_class[prompt].pop(index)
            dropped += 1
        if any(not by_class[p] for p, _ in bad):  # a class ran out of clips: pairs of the others from here on
            by_class = {p: c for p, c in by_class.items() if c}
            stream = _class_pairs(list(by_class), rng)
        if bad:
            continue
        made += 1
        yield wave, (pa, pb)
    if made < count:
        log.warning("training mixtures: made %d of %d (%d clips left out as short, silent or not mono)", made, count,
                    dropped)


def _wave(wave: Wave) -> np.ndarray:
    return np.asarray(wave() if callable(wave) else wave, np.float32)


def write_mixture(m: Mixture, path: str | Path) -> None:
    """The mixture as a 16-bit PCM WAV file (stereo when panned), written whole or not at all."""
    write_wav(path, m.wave, m.sample_rate)
