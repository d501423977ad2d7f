import dataclasses
import random

import numpy as np
import pytest
import soundfile as sf

from a2i_core.core.errors import A2IError
from a2i_core.timeline.events import read_csv
from a2i_core.timeline.recordings import build_recordings, save_recording, usable_clips
from tests.conftest import offline

SR = 1000  # a low rate keeps the arrays small; times are still checked to the sample
BANDS = {"dog": 0.1, "rain": 0.2, "a, \"quoted\" train": 0.3}  # a prompt from data may hold CSV's own characters


def cfg(**changes):
    return dataclasses.replace(offline("timeline").eval, **changes)


def clip(prompt: str, index: int, seconds: float) -> tuple[str, str, np.ndarray]:
    """A clip whose samples say what it is: its class's band, rising slowly within the clip (so that a new clip, even
    the same one again, starts where the value jumps)."""
    n = round(seconds * SR)
    return f"{prompt[:4]}-{index:02d}", prompt, (BANDS[prompt] + 0.05 * np.arange(n) / n).astype(np.float32)


def some_clips(per_class: int = 4) -> list[tuple[str, str, np.ndarray]]:
    return [clip(p, i, 2.0 + i) for p in BANDS for i in range(per_class)]


def clip_runs(wave: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) sample spans of the clips in a wave: non-zero runs that only rise slowly."""
    step = np.diff(wave)
    cut = np.flatnonzero((step < 0) | (step > 0.01) | (np.diff(wave != 0) != 0)) + 1
    edges = [0, *cut.tolist(), wave.size]
    return [(a, b) for a, b in zip(edges, edges[1:], strict=False) if wave[a] != 0]


def band(value: float) -> str:
    return min(BANDS, key=lambda p: abs(BANDS[p] + 0.025 - value))


def test_reference_events_tile_the_audio_and_are_exact_to_the_sample():
    for recording in build_recordings(some_clips(), cfg(), SR):
        events, wave = recording.events, recording.wave
        assert wave.dtype == np.float32 and wave.ndim == 1 and recording.sample_rate == SR
        assert events[0].start == 0 and events[-1].end == wave.size / SR
        for before, after in zip(events, events[1:], strict=False):
            assert before.end == after.start and before.label != after.label
        for event in events:
            span = wave[round(event.start * SR):round(event.end * SR)]
            assert event.start * SR == round(event.start * SR)
            if event.label is None:
                assert not span.any() and span.size == round(cfg().gap_seconds * SR)
            else:
                assert span.all() and {band(v) for v in span} == {event.label}


def test_each_recording_holds_its_clips_end_to_end_with_one_short_one():
    for recording in build_recordings(some_clips(), cfg(events=6), SR):
        runs = clip_runs(recording.wave)
        assert len(runs) == 6
        assert sum(b - a == round(cfg().short_seconds * SR) for a, b in runs) >= 1


def test_every_kind_of_boundary_appears_across_the_set():
    kinds = set()
    for recording in build_recordings(some_clips(), cfg(), SR):
        runs = clip_runs(recording.wave)
        for event in recording.events:
            inside = [r for r in runs if event.start * SR <= r[0] < event.end * SR]
            kinds |= {"gap"} if event.label is None else {"same"} if len(inside) > 1 else set()
        labelled = [e for e in recording.events if e.label]
        kinds |= {"different" for a, b in zip(labelled, labelled[1:], strict=False) if a.end == b.start}
    assert kinds == {"different", "same", "gap"}


def test_the_same_clips_in_any_order_give_the_same_recordings():
    clips = some_clips()
    first = build_recordings(clips, cfg(), SR)
    random.Random(3).shuffle(clips)
    again = build_recordings(clips, cfg(), SR)
    assert [r.events for r in first] == [r.events for r in again]
    assert all(np.array_equal(a.wave, b.wave) for a, b in zip(first, again, strict=True))
    other = build_recordings(clips, cfg(seed=1), SR)
    assert [r.events for r in other] != [r.events for r in first]


def test_unusable_clips_are_skipped_and_counted():
    clips = [*some_clips(2), clip("dog", 50, 1.0), ("stereo", "rain", np.full((2, 4000), 0.2, np.float32)),
             ("nan", "rain", np.full(4000, np.nan, np.float32)), ("both", "dog", np.full(4000, 0.5, np.float32)),
             ("both", "rain", np.full(4000, 0.5, np.float32))]
    by_class, skipped = usable_clips(clips, cfg(), SR)
    assert skipped == {"shorter_than_short_seconds": 1, "not_mono_finite_audio": 2, "several_labels": 2}
    assert sorted(by_class) == sorted(BANDS) and all(len(waves) == 2 for waves in by_class.values())
    for recording in build_recordings(clips, cfg(), SR):
        assert 0.5 not in recording.wave and np.isfinite(recording.wave).all()


@pytest.mark.parametrize("clips", [
    [clip("dog", i, 3.0) for i in range(4)],
    [clip("dog", 0, 3.0), clip("rain", 0, 1.0)],
    [],
])
def test_fewer_than_two_usable_classes_is_one_line(clips):
    with pytest.raises(A2IError, match="at least 2 classes") as err:
        build_recordings(clips, cfg(), SR)
    assert "\n" not in str(err.value)


def test_the_smallest_set_is_built():
    recordings = build_recordings(some_clips(1)[:2], cfg(recordings=1, events=2), SR)
    assert len(recordings) == 1 and len(clip_runs(recordings[0].wave)) == 2


def test_a_saved_recording_reads_back(tmp_path):
    recording = build_recordings(some_clips(), cfg(), SR)[0]
    save_recording(recording, tmp_path / "timeline-00")
    assert sorted(p.name for p in (tmp_path / "timeline-00").iterdir()) == ["audio.wav", "reference.csv"]
    audio, rate = sf.read(tmp_path / "timeline-00" / "audio.wav", dtype="float32")
    assert rate == SR and np.allclose(audio, recording.wave, atol=1 / 32768)
    back = read_csv(tmp_path / "timeline-00" / "reference.csv")
    assert [(e.start, e.end, e.label) for e in back] == [(e.start, e.end, e.label) for e in recording.events]
