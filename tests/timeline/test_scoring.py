import warnings
import weakref

import numpy as np
import pytest

from a2i_core.core.errors import A2IError
from a2i_core.timeline.events import Event
from a2i_core.timeline.scoring import flicker, sed_metrics

# One 10 s recording: dog 0-4 s, nothing 4-6 s, rain 6-10 s.
REFERENCE = {"r": [Event(0, 4, "dog", 1), Event(4, 6, None, 1), Event(6, 10, "rain", 1)]}


def score(*estimated: Event, reference=REFERENCE) -> dict:
    return sed_metrics(reference, {"r": list(estimated)}, 1.0, 0.5)


def test_a_perfect_timeline_scores_one_and_no_event_spans_are_not_events():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # dcase_util's pkg_resources warning is silenced
        metrics = sed_metrics(REFERENCE, REFERENCE, 1.0, 0.5)
    assert metrics == {"segment_f1": 1.0, "segment_error_rate": 0.0, "event_f1": 1.0, "event_error_rate": 0.0,
                       "recordings": 1, "reference_events": 2, "estimated_events": 2}


def test_an_onset_shifted_inside_the_collar_is_a_hit():
    metrics = score(Event(0.3, 4, "dog", 1), Event(4, 6, None, 1), Event(6, 10, "rain", 1))
    assert metrics["event_f1"] == 1.0 and metrics["segment_f1"] == 1.0  # 0.3 s: still active in the first second


def test_an_onset_shifted_outside_the_collar_is_a_miss_and_a_false_alarm():
    metrics = score(Event(0.6, 4, "dog", 1), Event(6, 10, "rain", 1))
    assert metrics["event_f1"] == pytest.approx(0.5)  # tp 1, fp 1, fn 1
    assert metrics["event_error_rate"] == pytest.approx(1.0)  # a deletion and an insertion over 2 events
    assert metrics["segment_f1"] == 1.0  # at 1 s resolution the first second is still active


def test_an_offset_inside_twenty_percent_of_the_length_is_a_hit():
    # Offset collar: max(0.5 s, 20 % of 4 s = 0.8 s).
    assert score(Event(0, 4.7, "dog", 1), Event(6, 10, "rain", 1))["event_f1"] == 1.0
    assert score(Event(0, 4.9, "dog", 1), Event(6, 10, "rain", 1))["event_f1"] == pytest.approx(0.5)


def test_a_late_offset_counts_in_the_segments():
    metrics = score(Event(0, 4.3, "dog", 1), Event(6, 10, "rain", 1))
    # Segment 4-5 s: one insertion; 8 true positives over 8 reference segments.
    assert metrics["segment_f1"] == pytest.approx(16 / 17)
    assert metrics["segment_error_rate"] == pytest.approx(1 / 8)


def test_a_missed_event():
    metrics = score(Event(0, 4, "dog", 1), Event(4, 10, None, 1))
    assert metrics["segment_f1"] == pytest.approx(2 / 3) and metrics["segment_error_rate"] == pytest.approx(0.5)
    assert metrics["event_f1"] == pytest.approx(2 / 3) and metrics["event_error_rate"] == pytest.approx(0.5)
    assert metrics["estimated_events"] == 1


def test_a_wrong_label_is_a_substitution():
    metrics = score(Event(0, 4, "dog", 1), Event(6, 10, "cat", 1))
    assert metrics["segment_f1"] == pytest.approx(0.5) and metrics["segment_error_rate"] == pytest.approx(0.5)
    assert metrics["event_f1"] == pytest.approx(0.5) and metrics["event_error_rate"] == pytest.approx(0.5)


def test_recordings_are_pooled_and_a_recording_without_events_is_measured():
    reference = {**REFERENCE, "quiet": [Event(0, 5, None, 1)]}
    estimated = {**REFERENCE, "quiet": [Event(0, 5, "dog", 0.9)]}  # a false alarm over 5 s of silence
    metrics = sed_metrics(reference, estimated, 1.0, 0.5)
    assert metrics["recordings"] == 2 and metrics["reference_events"] == 2 and metrics["estimated_events"] == 3
    assert metrics["segment_f1"] == pytest.approx(16 / 21)  # 8 tp, 5 fp
    assert metrics["event_f1"] == pytest.approx(0.8)  # 2 tp, 1 fp


def test_nothing_to_measure_is_none_not_nan():
    metrics = sed_metrics({"q": [Event(0, 3, None, 1)]}, {"q": [Event(0, 3, None, 1)]}, 1.0, 0.5)
    assert metrics["segment_f1"] is None and metrics["event_error_rate"] is None


@pytest.mark.parametrize(("estimated", "segment_seconds", "collar", "says"), [
    ({"other": []}, 1.0, 0.5, "'other' has only an estimate"),
    ({}, 1.0, 0.5, "'r' has only a reference"),
    (REFERENCE, 0.0, 0.5, "segment_seconds"),
    (REFERENCE, 1.0, 0.0, "collar_seconds"),
    (REFERENCE, float("nan"), 0.5, "segment_seconds"),
])
def test_sed_metrics_refuse_odd_inputs_in_one_line(estimated, segment_seconds, collar, says):
    with pytest.raises(A2IError, match=says):
        sed_metrics(REFERENCE, estimated, segment_seconds, collar)


# ---- flicker ---------------------------------------------------------------------------------------------------


def frame(value: int) -> np.ndarray:
    return np.full((4, 6, 3), value, np.uint8)


def test_flicker_splits_pairs_inside_events_from_pairs_across_boundaries():
    # Values 0, 10, 20 | 120, 130: the jump is across the boundary at 1.0 s (a frame at 1.0 starts the next event).
    frames = [(0.0, frame(0)), (0.5, frame(10)), (0.75, frame(20)), (1.0, frame(120)), (1.5, frame(130))]
    result = flicker(iter(frames), [1.0])
    assert result == {"inside": pytest.approx(10 / 255), "across": pytest.approx(100 / 255), "pairs_inside": 3,
                      "pairs_across": 1}


def test_flicker_does_not_wrap_uint8_differences():
    assert flicker([(0.0, frame(200)), (1.0, frame(10))], [])["inside"] == pytest.approx(190 / 255)


def test_flicker_holds_no_more_than_the_previous_frame():
    alive = []

    def film():
        for i in range(50):
            image = frame(i % 2 * 255)
            alive.append(weakref.ref(image))
            assert sum(ref() is not None for ref in alive) <= 2  # frames already used are gone
            yield i / 4, image

    result = flicker(film(), [5.0, 100.0])
    assert result["pairs_inside"] == 48 and result["pairs_across"] == 1 and result["inside"] == pytest.approx(1.0)


def test_flicker_copes_with_a_decoder_that_reuses_its_buffer():
    buffer = frame(0)

    def film():
        for i in range(4):
            buffer[:] = i * 50
            yield float(i), buffer

    assert flicker(film(), [])["inside"] == pytest.approx(50 / 255)


def test_flicker_without_pairs_of_a_kind_says_none():
    assert flicker([(0.0, frame(0))], [1.0]) == {"inside": None, "across": None, "pairs_inside": 0,
                                                 "pairs_across": 0}
    assert flicker([(0.0, frame(0)), (2.0, frame(0))], [1.0])["inside"] is None


@pytest.mark.parametrize(("frames", "says"), [
    ([(0.0, frame(0)), (0.0, frame(0))], "frame 1 at 0.0 s is not after"),
    ([(1.0, frame(0)), (0.5, frame(0))], "frame 1 at 0.5 s is not after"),
    ([(float("nan"), frame(0))], "frame 0 at nan"),
    ([(0.0, np.zeros((4, 6, 3), np.float32))], "frame 0 must be HxWx3 uint8"),
    ([(0.0, np.zeros((4, 6), np.uint8))], "frame 0 must be HxWx3 uint8"),
    ([(0.0, frame(0)), (1.0, np.zeros((5, 6, 3), np.uint8))], r"frame 1 is \(5, 6, 3\)"),
])
def test_flicker_refuses_odd_frames_in_one_line(frames, says):
    with pytest.raises(A2IError, match=says):
        flicker(frames, [])
