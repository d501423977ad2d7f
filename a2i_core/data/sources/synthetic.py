"""Procedural sound classes: the offline profile's data source.

Each class is a small synthesiser a person would recognise by ear (a siren sweep, a ringing bell, ...).
A clip is fully determined by its row in the candidates table (class, seed, duration, gain, noise level),
so the download stage can regenerate exactly the same audio on any machine.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16_000

Synth = Callable[[np.random.Generator, int], np.ndarray]


def _t(n: int) -> np.ndarray:
    return np.arange(n) / SAMPLE_RATE


def _siren(rng: np.random.Generator, n: int) -> np.ndarray:
    # A wailing sweep between two pitches; instantaneous phase is the integral of the frequency.
    lo, hi = rng.uniform(550, 750), rng.uniform(1300, 1700)
    rate = rng.uniform(0.4, 1.2)
    freq = lo + (hi - lo) * 0.5 * (1 - np.cos(2 * np.pi * rate * _t(n) + rng.uniform(0, np.pi)))
    phase = 2 * np.pi * np.cumsum(freq) / SAMPLE_RATE
    return np.sin(phase) + 0.3 * np.sin(2 * phase) + 0.15 * np.sin(3 * phase)


def _bell(rng: np.random.Generator, n: int) -> np.ndarray:
    # Inharmonic partials of a church bell (hum, prime, tierce, quint, nominal, ...), struck and decaying.
    f0 = rng.uniform(180, 420)
    out = np.zeros(n)
    strikes = np.arange(int(rng.integers(0, 2400)), n, int(rng.uniform(0.9, 1.6) * SAMPLE_RATE))
    for start in strikes:
        t = _t(n - start)
        tone = sum(a * np.sin(2 * np.pi * f0 * r * t) * np.exp(-t / d)
                   for r, a, d in [(0.5, 0.6, 2.0), (1.0, 1.0, 1.2), (1.19, 0.6, 0.9), (1.5, 0.4, 0.7),
                                   (2.0, 0.7, 0.6), (2.5, 0.3, 0.4), (3.0, 0.2, 0.3)])
        out[start:] += tone
    return out


def _rain(rng: np.random.Generator, n: int) -> np.ndarray:
    # Broadband hiss plus many tiny droplet clicks.
    hiss = np.convolve(rng.standard_normal(n), [1, -0.6], mode="same")
    drops = np.zeros(n)
    idx = rng.integers(0, n, size=int(n / SAMPLE_RATE * rng.uniform(80, 200)))
    drops[idx] = rng.uniform(0.5, 3, size=idx.size)
    ring = np.exp(-np.arange(80) / 12) * np.sin(2 * np.pi * rng.uniform(2500, 5000) * _t(80))
    return 0.5 * hiss + np.convolve(drops, ring, mode="same")


def _engine(rng: np.random.Generator, n: int) -> np.ndarray:
    # A low idling hum: harmonics of the firing rate, amplitude-modulated, with a little rumble.
    f0 = rng.uniform(35, 70) * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * _t(n)))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    tone = sum(np.sin(k * phase) / k for k in range(1, 9))
    am = 1 + 0.5 * np.sin(phase / 2)
    rumble = np.convolve(rng.standard_normal(n), np.ones(40) / 40, mode="same")
    return tone * am + 2 * rumble


def _birds(rng: np.random.Generator, n: int) -> np.ndarray:
    # Short, fast frequency sweeps high up, at irregular intervals.
    out = np.zeros(n)
    pos = int(rng.integers(0, 1600))
    while pos < n:
        length = int(rng.uniform(0.04, 0.14) * SAMPLE_RATE)
        f_start, f_end = rng.uniform(2500, 6000), rng.uniform(2500, 6000)
        freq = np.linspace(f_start, f_end, length)
        chirp = np.sin(2 * np.pi * np.cumsum(freq) / SAMPLE_RATE) * np.hanning(length)
        end = min(n, pos + length)
        out[pos:end] += chirp[: end - pos]
        pos = end + int(rng.uniform(0.03, 0.3) * SAMPLE_RATE)
    return out


def _dog(rng: np.random.Generator, n: int) -> np.ndarray:
    # Barks: loud harmonic bursts with a noisy edge and a falling pitch, a few per second.
    out = np.zeros(n)
    pos = int(rng.integers(0, 2000))
    while pos < n:
        length = int(rng.uniform(0.12, 0.25) * SAMPLE_RATE)
        t = _t(length)
        f = rng.uniform(350, 650) * (1 - 0.4 * t / t[-1])
        phase = 2 * np.pi * np.cumsum(f) / SAMPLE_RATE
        env = np.minimum(1, t / 0.01) * np.exp(-t / 0.07)
        bark = env * (sum(np.sin(k * phase) / k for k in range(1, 6)) + 0.4 * rng.standard_normal(length))
        end = min(n, pos + length)
        out[pos:end] += bark[: end - pos]
        pos = end + int(rng.uniform(0.15, 0.6) * SAMPLE_RATE)
    return out


def _drums(rng: np.random.Generator, n: int) -> np.ndarray:
    # Kick (a falling sine) on the beat, snare (a noise burst) on the off-beat.
    beat = int(60 / rng.uniform(90, 150) * SAMPLE_RATE)
    out = np.zeros(n)
    kick_t = _t(int(0.25 * SAMPLE_RATE))
    kick = np.sin(2 * np.pi * np.cumsum(50 + 100 * np.exp(-kick_t / 0.03)) / SAMPLE_RATE) * np.exp(-kick_t / 0.12)
    snare = rng.standard_normal(int(0.15 * SAMPLE_RATE)) * np.exp(-_t(int(0.15 * SAMPLE_RATE)) / 0.04)
    for i, start in enumerate(range(0, n, beat)):
        hit = kick if i % 2 == 0 else 0.7 * snare
        end = min(n, start + hit.size)
        out[start:end] += hit[: end - start]
    return out


def _clock(rng: np.random.Generator, n: int) -> np.ndarray:
    # Tick-tock: short resonant clicks at a steady period, alternating pitch.
    period = int(rng.uniform(0.45, 0.55) * SAMPLE_RATE)
    f_tick, f_tock = rng.uniform(2500, 3500), rng.uniform(1500, 2200)
    click_t = _t(int(0.02 * SAMPLE_RATE))
    out = np.zeros(n)
    for i, start in enumerate(range(int(rng.integers(0, period)), n, period)):
        click = np.sin(2 * np.pi * (f_tick if i % 2 == 0 else f_tock) * click_t) * np.exp(-click_t / 0.003)
        end = min(n, start + click.size)
        out[start:end] += click[: end - start]
    return out


@dataclass(frozen=True)
class SoundClass:
    name: str  # what the prompt template names: "an image of a {name}"
    synth: Synth


SOUND_CLASSES: dict[str, SoundClass] = {
    "siren": SoundClass("police car siren", _siren),
    "bell": SoundClass("ringing church bell", _bell),
    "rain": SoundClass("rainy street", _rain),
    "engine": SoundClass("idling car engine", _engine),
    "birds": SoundClass("bird singing in a tree", _birds),
    "dog": SoundClass("barking dog", _dog),
    "drums": SoundClass("drum kit", _drums),
    "clock": SoundClass("ticking clock", _clock),
}


def class_prompt(label: str, template: str) -> str:
    """The prompt of a synthetic class: ``template`` naming what it sounds like ("an image of a barking dog")."""
    return template.format(name=SOUND_CLASSES[label].name)


@dataclass(frozen=True)
class ClipSpec:
    """Everything that determines one synthetic clip; stored as columns of the candidates table."""

    label: str
    seed: int
    seconds: float
    gain_db: float
    snr_db: float


def clip_specs(classes: list[str], clips_per_class: int, min_seconds: float, max_seconds: float,
               seed: int) -> dict[str, ClipSpec]:
    """Deterministic clip specs keyed by clip_id (``{label}_{index:04d}``)."""
    specs = {}
    for label in classes:
        # A per-class stream keeps a class's clips unchanged when other classes are added or removed.
        rng = np.random.default_rng([seed, zlib.crc32(label.encode())])
        for i in range(clips_per_class):
            specs[f"{label}_{i:04d}"] = ClipSpec(
                label=label,
                seed=int(rng.integers(0, 2**31 - 1)),
                seconds=round(float(rng.uniform(min_seconds, max_seconds)), 3),
                gain_db=round(float(rng.uniform(-18, -3)), 2),
                snr_db=round(float(rng.uniform(10, 30)), 2),
            )
    return specs


def synthesize(spec: ClipSpec) -> np.ndarray:
    """The clip's 16 kHz mono float32 waveform, peak-normalised to ``gain_db`` with pink-ish background noise."""
    rng = np.random.default_rng(spec.seed)
    n = int(round(spec.seconds * SAMPLE_RATE))
    signal = SOUND_CLASSES[spec.label].synth(rng, n)
    signal = signal / (np.max(np.abs(signal)) + 1e-9)
    noise = np.convolve(rng.standard_normal(n), np.ones(4) / 4, mode="same")
    noise *= np.sqrt(np.mean(signal**2) / (np.mean(noise**2) + 1e-12)) * 10 ** (-spec.snr_db / 20)
    mix = signal + noise
    mix *= 10 ** (spec.gain_db / 20) / (np.max(np.abs(mix)) + 1e-9)
    return mix.astype(np.float32)
