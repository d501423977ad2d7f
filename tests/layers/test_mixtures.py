"""Two-source mixtures: BS.1770 level ratios measured back, the peak rule, hard panning, and seeded sets that are the
same whatever order the clips come in, with the same pairs at every level."""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf

from a2i_core.core.errors import A2IError
from a2i_core.core.params import MixturesParams
from a2i_core.layers.mixtures import (
    PEAK,
    Mixture,
    build_mixtures,
    level_name,
    loudness,
    mix,
    pan,
    training_mixtures,
    write_mixture,
)

RATE = 16_000


def _tone(hz: float, seconds: float = 2.0, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _noise(seed: int, seconds: float = 2.0, amplitude: float = 0.05) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(round(seconds * RATE)) * amplitude).astype(np.float32)


def _parts(mixed: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """(gain of a, gain of b, relative residual): ``mixed`` regressed on the two sources cut to its length."""
    basis = np.stack([a[: len(mixed)], b[: len(mixed)]], axis=1).astype(np.float64)
    (ga, gb), *_ = np.linalg.lstsq(basis, mixed.astype(np.float64), rcond=None)
    residual = np.linalg.norm(basis @ [ga, gb] - mixed) / np.linalg.norm(mixed)
    return float(ga), float(gb), float(residual)


def _clips(classes: int = 4, per_class: int = 3) -> list[tuple[str, str, np.ndarray]]:
    """Distinct clips (a tone each, of its own length) of ``classes`` prompts."""
    return [(f"c{c}_{i}", f"sound {c}", _tone(200 + 150 * c + 20 * i, 1.0 + 0.1 * i + 0.05 * c))
            for c in range(classes) for i in range(per_class)]


def test_loudness_is_pyloudnorm_s_own():
    tone = _tone(1000)
    assert loudness(tone, RATE) == pytest.approx(pyloudnorm.Meter(RATE).integrated_loudness(tone.astype(np.float64)))
    stereo = np.stack([tone, tone * 0.5], axis=1)
    assert loudness(stereo, RATE) == pytest.approx(pyloudnorm.Meter(RATE).integrated_loudness(stereo.astype(float)))


def test_a_silent_or_empty_wave_is_minus_infinity_and_a_short_one_is_measured_tiled():
    assert loudness(np.zeros(RATE, np.float32), RATE) == float("-inf")
    assert loudness(np.zeros(0, np.float32), RATE) == float("-inf")
    short = _tone(1000, seconds=0.1)  # under BS.1770's 0.4 s block: repeated whole to fill one
    assert loudness(short, RATE) == pytest.approx(loudness(_tone(1000), RATE), abs=0.5)
    with pytest.raises(A2IError, match="not finite"):
        loudness(np.full(RATE, np.nan, np.float32), RATE)


@pytest.mark.parametrize("amplitude", [0.05, 0.8])  # quiet: summed as is; loud: scaled down to the peak
def test_a_minus_6_db_mix_measures_back_within_half_a_lu(amplitude):
    a, b = _noise(0, amplitude=amplitude), _tone(440, seconds=3.0, amplitude=amplitude)
    mixed = mix(a, b, -6.0, RATE)
    assert mixed.dtype == np.float32 and mixed.shape == (len(a),)  # cut to the shorter
    ga, gb, residual = _parts(mixed, a, b)
    assert residual < 1e-4
    measured = loudness(gb * b[: len(a)], RATE) - loudness(ga * a, RATE)
    assert measured == pytest.approx(-6.0, abs=0.5)
    peak = float(np.abs(mixed).max())
    if amplitude > 0.5:
        assert peak == pytest.approx(PEAK, abs=1e-6)
    else:
        assert peak < PEAK and ga == pytest.approx(1.0, abs=1e-4)  # never scaled up


def test_mixing_a_silent_sound_is_one_line():
    with pytest.raises(A2IError, match="second sound is silent") as err:
        mix(_noise(0), np.zeros(RATE, np.float32), 0.0, RATE)
    assert "\n" not in str(err.value)


def test_pan_puts_the_first_left_and_the_second_right_equally_loud():
    a, b = _noise(1, amplitude=0.5), _tone(300, amplitude=0.9)
    stereo = pan(a, b, RATE)
    assert stereo.shape == (len(a), 2) and stereo.dtype == np.float32
    assert float(np.abs(stereo).max()) <= PEAK + 1e-6
    assert np.allclose(stereo[:, 0] / np.abs(stereo[:, 0]).max(), a / np.abs(a).max(), atol=1e-5)
    assert np.allclose(stereo[:, 1] / np.abs(stereo[:, 1]).max(), b / np.abs(b).max(), atol=1e-5)
    assert loudness(stereo[:, 0], RATE) == pytest.approx(loudness(stereo[:, 1], RATE), abs=0.1)


def test_level_names_are_file_safe_and_distinct():
    assert [level_name(db) for db in (0.0, -6.0, 3.0, -1.5)] == ["0dB", "m6dB", "p3dB", "m1.5dB"]


def test_a_set_is_seeded_and_the_same_whatever_the_clips_order():
    cfg = MixturesParams(per_level=5, levels_db=[0.0, -6.0], seed=3)
    clips = _clips()
    first = build_mixtures(clips, cfg, RATE)
    again = build_mixtures(list(reversed(clips)), cfg, RATE)
    assert [m.name for m in first] == [m.name for m in again]
    assert all(np.array_equal(m.wave, n.wave) for m, n in zip(first, again, strict=True))
    other = build_mixtures(clips, MixturesParams(per_level=5, levels_db=[0.0, -6.0], seed=4), RATE)
    assert any(not np.array_equal(m.wave, n.wave) for m, n in zip(first, other, strict=True))
    assert [m.name for m in first[:6]] == ["mix-0dB-000", "mix-0dB-001", "mix-0dB-002", "mix-0dB-003",
                                           "mix-0dB-004", "mix-m6dB-000"]
    assert [m.name for m in first[-5:]] == [f"pan-{k:03d}" for k in range(5)]


def test_every_level_and_the_panned_set_use_the_same_pairs():
    cfg = MixturesParams(per_level=8, levels_db=[0.0, -6.0, -12.0], seed=0)
    made = build_mixtures(_clips(), cfg, RATE)
    levels = [made[i * 8:(i + 1) * 8] for i in range(3)]
    panned = made[24:]
    assert len(made) == 32 and all(m.panned and m.wave.ndim == 2 and m.db == 0.0 for m in panned)
    for k, p in enumerate(panned):
        for level, db in zip(levels, cfg.levels_db, strict=True):
            m = level[k]
            assert (m.first, m.second, m.db, m.panned) == (p.first, p.second, db, False) and m.first != m.second
            ga, gb, residual = _parts(m.wave, p.wave[:, 0], p.wave[:, 1])  # the same two clips, other gains
            assert residual < 1e-3
            left, right = ga * p.wave[:, 0], gb * p.wave[:, 1]
            assert loudness(right, RATE) - loudness(left, RATE) == pytest.approx(db, abs=0.5)


def test_pairs_spread_evenly_over_class_pairs():
    made = build_mixtures(_clips(classes=4), MixturesParams(per_level=12, levels_db=[0.0], seed=1), RATE)
    counts = Counter(frozenset((m.first, m.second)) for m in made if not m.panned)
    assert len(counts) == 6 and set(counts.values()) == {2}  # 4 classes: 6 pairs, each twice


def test_silent_and_short_clips_are_left_out_counted_and_logged(caplog):
    clips = [*_clips(classes=2), ("quiet", "sound 0", np.zeros(RATE, np.float32)),
             ("blip", "sound 1", _tone(500, seconds=0.1)), ("both", "sound 0", _tone(700)),
             ("both", "sound 1", _tone(700))]
    with caplog.at_level(logging.INFO, logger="a2i_core.layers.mixtures"):
        made = build_mixtures(clips, MixturesParams(per_level=4, levels_db=[0.0], seed=0), RATE)
    assert len(made) == 8
    line = next(r.getMessage() for r in caplog.records if "left out" in r.getMessage())
    assert "left out 4 clips" in line and "'silent': 1" in line and "'shorter_than_0.5_s': 1" in line
    assert "'several_labels': 2" in line and "quiet" in line


@pytest.mark.parametrize("clips", [[("a", "dog", _tone(300)), ("b", "dog", _tone(400))],
                                   [("a", "dog", _tone(300)), ("b", "cat", np.zeros(RATE, np.float32))], []])
def test_one_class_only_is_one_line(clips):
    with pytest.raises(A2IError, match="at least 2 classes") as err:
        build_mixtures(clips, MixturesParams(per_level=2, levels_db=[0.0], seed=0), RATE)
    assert "\n" not in str(err.value)


def test_a_level_listed_twice_is_refused():
    with pytest.raises(A2IError, match="lists -6 dB twice"):
        build_mixtures(_clips(), MixturesParams(per_level=2, levels_db=[-6.0, 0.0, -6.0], seed=0), RATE)


def test_training_mixtures_are_seeded_lazy_and_of_two_classes_at_drawn_levels():
    decoded = Counter()

    def lazy(clip_id: str, wave: np.ndarray):
        def load() -> np.ndarray:
            decoded[clip_id] += 1
            return wave
        return load

    clips = [(c, p, lazy(c, w)) for c, p, w in _clips(classes=3)]
    clips.append(("hush", "sound 2", lazy("hush", np.zeros(2 * RATE, np.float32))))  # silent: dropped when found
    made = list(training_mixtures(clips, 30, -15.0, 3.0, 7, RATE))
    again = list(training_mixtures(list(reversed(clips)), 30, -15.0, 3.0, 7, RATE))
    assert len(made) == 30 and decoded  # decoded when drawn
    assert all(np.array_equal(w, v) and p == q for (w, p), (v, q) in zip(made, again, strict=True))
    assert all(a != b and w.dtype == np.float32 and w.ndim == 1 for w, (a, b) in made)
    assert len({pair for _, pair in made}) >= 4  # both orders of several class pairs
    assert decoded["hush"] <= 2  # once per run at most: never drawn again


def test_training_mixtures_need_two_classes():
    with pytest.raises(A2IError, match="at least 2 classes"):
        next(training_mixtures([("a", "dog", _tone(300))], 3, -6.0, 0.0, 0, RATE))


def test_a_mixture_is_written_as_16_bit_wav_stereo_when_panned(tmp_path):
    stereo = Mixture("pan-000", "a", "b", 0.0, True, pan(_noise(0), _tone(300), RATE), RATE)
    mono = Mixture("mix-0dB-000", "a", "b", 0.0, False, mix(_noise(0), _tone(300), 0.0, RATE), RATE)
    write_mixture(stereo, tmp_path / "pan.wav")
    write_mixture(mono, tmp_path / "mix.wav")
    for path, channels in ((tmp_path / "pan.wav", 2), (tmp_path / "mix.wav", 1)):
        info = sf.info(path)
        assert (info.channels, info.subtype, info.samplerate) == (channels, "PCM_16", RATE)
    back, _ = sf.read(tmp_path / "pan.wav", dtype="float32")
    assert np.allclose(back, stereo.wave, atol=1e-4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mix.wav", "pan.wav"]  # no temporary left behind
