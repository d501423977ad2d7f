import math
import subprocess

import numpy as np
import pytest

from a2i_core.core.audio_io import ffmpeg_binary
from a2i_core.core.errors import A2IError
from a2i_core.timeline import events as events_module
from a2i_core.timeline.events import Event, read_csv, segment, window_scores, write_csv, write_vtt
from tests.conftest import offline

LABELS = ["dog", "rain", "train"]


def cfg(**changes):
    return offline("timeline", **changes)


def scores_for(truth: list[int | None], confidence: float = 0.9, k: int = 3) -> np.ndarray:
    """(n, k) scores: each window confident in its true label; None windows spread evenly (low confidence)."""
    scores = np.full((len(truth), k), (1 - confidence) / (k - 1))
    for i, label in enumerate(truth):
        if label is None:
            scores[i] = 1 / k
        else:
            scores[i, label] = confidence
    return scores


def run(truth, hop=0.5, duration=None, levels=None, **changes):
    duration = len(truth) * hop if duration is None else duration
    levels = np.zeros(len(truth)) if levels is None else levels
    return segment(scores_for(truth), levels, LABELS, hop, duration, cfg(**changes))


def spans(events):
    return [(e.start, e.end, e.label) for e in events]


def assert_tiles(events, hop, duration):
    assert events[0].start == 0 and events[-1].end == duration
    for before, after in zip(events, events[1:], strict=False):
        assert before.end == after.start and before.label != after.label
        assert math.isclose(after.start / hop, round(after.start / hop), abs_tol=1e-9)


# ---- window_scores ---------------------------------------------------------------------------------------------


def test_window_scores_are_a_softmax_over_cosines():
    bank = np.eye(3, 8)
    pooled = np.array([[5.0, 0.1, 0, 0, 0, 0, 0, 0], [0, 0, 0.01, 0, 0, 0, 0, 0]])  # scale must not matter
    scores = window_scores(pooled, bank, 0.05)
    assert scores.shape == (2, 3)
    np.testing.assert_allclose(scores.sum(axis=1), 1)
    assert scores.argmax(axis=1).tolist() == [0, 2]
    cosines = np.array([5, 0.1, 0]) / np.hypot(5, 0.1)
    expected = np.exp(cosines / 0.05) / np.exp(cosines / 0.05).sum()
    np.testing.assert_allclose(scores[0], expected)


def test_window_scores_stay_finite_at_a_tiny_temperature_and_for_a_zero_prediction():
    bank = np.random.default_rng(0).normal(size=(4, 16))
    scores = window_scores(np.vstack([bank[2] * 1e6, np.zeros(16)]), bank, 1e-4)
    assert np.isfinite(scores).all()
    assert scores[0, 2] == pytest.approx(1)
    np.testing.assert_allclose(scores[1], 0.25)  # no direction: no preference


@pytest.mark.parametrize(("pooled", "bank", "temperature", "says"), [
    (np.zeros((0, 4)), np.eye(2, 4), 0.1, "at least one window"),
    (np.zeros(4), np.eye(2, 4), 0.1, "at least one window"),
    (np.ones((2, 4)), np.eye(2, 5), 0.1, "prompt bank"),
    (np.full((2, 4), np.nan), np.eye(2, 4), 0.1, "NaN"),
    (np.ones((2, 4)), np.eye(2, 4), 0.0, "temperature"),
    (np.ones((2, 4)), np.eye(2, 4), float("nan"), "temperature"),
])
def test_window_scores_refuse_odd_inputs_in_one_line(pooled, bank, temperature, says):
    with pytest.raises(A2IError, match=says) as err:
        window_scores(pooled, bank, temperature)
    assert "\n" not in str(err.value)


# ---- segment ---------------------------------------------------------------------------------------------------


def test_events_tile_the_recording_with_boundaries_on_the_hop():
    truth = [0] * 6 + [1] * 5 + [2] * 4
    events = run(truth, hop=0.96, duration=14.7)  # the last window's remainder belongs to the last event
    assert_tiles(events, 0.96, 14.7)
    assert [e.label for e in events] == ["dog", "rain", "train"]
    assert events[1].start == 6 * 0.96 and events[2].end == 14.7


def test_switch_penalty_removes_a_one_window_flicker():
    truth = [0] * 6 + [1] + [0] * 6
    assert [e.label for e in run(truth, switch_penalty=0.0, min_event_seconds=0.0)] == ["dog", "rain", "dog"]
    assert spans(run(truth, switch_penalty=4.0, min_event_seconds=0.0)) == [(0, 6.5, "dog")]


def test_silence_is_no_event_however_confident_the_mapper():
    levels = np.zeros(12)
    levels[4:8] = -np.inf  # digital silence
    levels[8] = -60.0
    events = run([0] * 12, levels=levels, switch_penalty=1.0, min_event_seconds=0.0)
    assert spans(events) == [(0, 2.0, "dog"), (2.0, 4.5, None), (4.5, 6.0, "dog")]
    assert events[1].score == pytest.approx(0.9)  # no event's score: the mean best score of its windows


def test_low_confidence_is_no_event():
    events = run([0] * 4 + [None] * 4 + [1] * 4, switch_penalty=1.0, min_event_seconds=0.0, min_score=0.5)
    assert [e.label for e in events] == ["dog", None, "rain"]
    # With min_score 0 a label always beats "no event", except in silence.
    assert None not in [e.label for e in run([0] * 4 + [None] * 4 + [1] * 4, min_score=0.0)]


@pytest.mark.parametrize(("middle", "into"), [([0.5, 0.1, 0.4], "dog"), ([0.1, 0.5, 0.4], "rain")])
def test_a_short_event_merges_into_the_neighbour_that_fits_it_better(middle, into):
    scores = scores_for([0] * 4 + [2] + [1] * 4)
    scores[4] = [middle[0], middle[1], middle[2]]
    scores[4, 2] = 0.9  # the window's own best is "train": only min_event_seconds removes it
    scores[4] /= scores[4].sum()
    events = segment(scores, np.zeros(9), LABELS, 0.5, 4.5, cfg(switch_penalty=0.0, min_score=0.0))
    assert spans(events) == [(0, 2.5, "dog"), (2.5, 4.5, "rain")] if into == "dog" else \
        [(0, 2.0, "dog"), (2.0, 4.5, "rain")]


def test_merging_joins_equal_neighbours_and_scores_by_the_kept_label():
    scores = scores_for([0] * 4 + [1] + [0] * 4)
    events = segment(scores, np.zeros(9), LABELS, 0.5, 4.5, cfg(switch_penalty=0.0, min_score=0.0))
    assert spans(events) == [(0, 4.5, "dog")]
    assert events[0].score == pytest.approx((8 * 0.9 + 0.05) / 9)


def test_no_event_is_shorter_than_the_minimum_unless_the_recording_is():
    rng = np.random.default_rng(1)
    scores = rng.dirichlet(np.ones(3) * 0.3, size=200)  # a mapper that flickers on every window
    events = segment(scores, np.zeros(200), LABELS, 0.25, 50.0, cfg(switch_penalty=0.0, min_event_seconds=1.0))
    assert len(events) > 3
    assert min(e.end - e.start for e in events) >= 1.0 - 1e-9
    assert_tiles(events, 0.25, 50.0)
    short = segment(scores_for([0, 1]), np.zeros(2), LABELS, 0.3, 0.5, cfg(min_event_seconds=1.0))
    assert len(short) == 1 and (short[0].start, short[0].end) == (0, 0.5)


def test_one_window_shorter_than_a_window():
    events = segment(scores_for([1]), np.zeros(1), LABELS, 0.96, 0.2, cfg())
    assert spans(events) == [(0, 0.2, "rain")]


def test_an_hour_of_windows_over_many_labels_is_segmented():
    rng = np.random.default_rng(2)
    n, k = 3750, 100  # an hour of VGGish windows against a 100-prompt bank
    scores = rng.dirichlet(np.ones(k) * 0.1, size=n)
    labels = [f"p{i}" for i in range(k)]
    events = segment(scores, rng.uniform(-80, 0, n), labels, 0.96, 3600.0, cfg())
    assert_tiles(events, 0.96, 3600.0)


@pytest.mark.parametrize(("change", "says"), [
    ({"scores": np.zeros((0, 3))}, "windows >= 1"),
    ({"scores": np.full((4, 2), 0.5)}, "3 labels"),
    ({"scores": np.full((4, 3), np.nan)}, "finite probabilities"),
    ({"scores": np.full((4, 3), 2.0)}, "finite probabilities"),
    ({"levels": np.zeros(3)}, "levels"),
    ({"levels": np.full(4, np.nan)}, "levels"),
    ({"hop": 0.0}, "hop"),
    ({"duration": 10.0}, "cannot cover"),
    ({"duration": 1.5}, "cannot cover"),
    ({"duration": float("inf")}, "cannot cover"),
])
def test_segment_refuses_odd_inputs_in_one_line(change, says):
    args = {"scores": scores_for([0] * 4), "levels": np.zeros(4), "hop": 0.5, "duration": 2.0, **change}
    with pytest.raises(A2IError, match=says) as err:
        segment(args["scores"], args["levels"], LABELS, args["hop"], args["duration"], cfg())
    assert "\n" not in str(err.value)


# ---- CSV -------------------------------------------------------------------------------------------------------

HOSTILE = 'dog, "barking"\n-->\r\n<b>&amp;</b>'


def test_csv_round_trips_hostile_labels_and_no_event(tmp_path):
    events = [Event(0.0, 1.92, HOSTILE, 0.93125), Event(1.92, 2.88, None, 0.4), Event(2.88, 3.5, "rain", 1.0)]
    write_csv(events, tmp_path / "t.csv")
    text = (tmp_path / "t.csv").read_text(encoding="utf-8")
    assert text.startswith("start,end,label,score\n0.000,1.920,") and "\n1.920,2.880,,0.4000\n" in text
    back = read_csv(tmp_path / "t.csv")
    assert [(e.start, e.end, e.label) for e in back] == [(e.start, e.end, e.label) for e in events]
    assert back[0].score == pytest.approx(0.9312, abs=1e-4)
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]  # no temporary file left


def test_write_csv_refuses_an_empty_label(tmp_path):
    with pytest.raises(A2IError, match="empty label"):
        write_csv([Event(0, 1, "", 0.5)], tmp_path / "t.csv")
    assert not (tmp_path / "t.csv").exists()


@pytest.mark.parametrize(("rows", "says"), [
    ("0,1,dog,abc", "row 2: score is not a number"),
    ("0,nan,dog,0.5", "row 2: end must be finite"),
    ("0,inf,dog,0.5", "row 2: end must be finite"),
    ("0,1,dog,0.5\n2,1,dog,0.5", "row 3: needs 0 <= start < end"),
    ("-1,1,dog,0.5", "row 2: needs 0 <= start"),
    ("1,1,dog,0.5", "row 2: needs 0 <= start < end"),
    ("0,2,dog,0.5\n1,3,rain,0.5", "row 3: starts at 1 s, before the previous event ends"),
    ("2,3,dog,0.5\n0,1,rain,0.5", "row 3: starts at 0 s"),
    ("0,1,dog", "row 2: expected 4 fields, got 3"),
    ("0,1,dog,1.5", "row 2: score must be in"),
    ('0,1,"dog,0.5', "row 2: not CSV"),  # the quote runs to the end of the file
    ('0,1,"dog"x,0.5', "row 2: not CSV"),
])
def test_read_csv_names_the_hostile_row(tmp_path, rows, says):
    (tmp_path / "t.csv").write_text("start,end,label,score\n" + rows + "\n", encoding="utf-8")
    with pytest.raises(A2IError, match=f"t.csv {says}") as err:
        read_csv(tmp_path / "t.csv")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("data", "says"), [
    (b"start,end,label\n", "header must be"),
    (b"", "header must be"),
    (b"start,end,label,score\n0,1,\xff,0.5\n", "not UTF-8"),
])
def test_read_csv_refuses_what_is_not_a_timeline(tmp_path, data, says):
    (tmp_path / "t.csv").write_bytes(data)
    with pytest.raises(A2IError, match=says):
        read_csv(tmp_path / "t.csv")


def test_read_csv_refuses_a_huge_file_without_reading_it_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(events_module, "MAX_CSV_BYTES", 1000)
    rows = "".join(f"{i},{i + 1},dog,0.5\n" for i in range(200))
    (tmp_path / "t.csv").write_text("start,end,label,score\n" + rows)
    with pytest.raises(A2IError, match="not a timeline"):
        read_csv(tmp_path / "t.csv")
    with pytest.raises(A2IError, match="cannot read"):
        read_csv(tmp_path / "missing.csv")


# ---- WebVTT ----------------------------------------------------------------------------------------------------


def test_vtt_has_one_cue_per_labelled_event(tmp_path):
    events = [Event(0, 1.5, "dog", 0.934), Event(1.5, 3, None, 0.4), Event(3, 3725.25, "rain", 0.5)]
    write_vtt(events, tmp_path / "t.vtt")
    assert (tmp_path / "t.vtt").read_text(encoding="utf-8") == (
        "WEBVTT\n\n1\n00:00:00.000 --> 00:00:01.500\ndog (0.93)\n\n2\n00:00:03.000 --> 01:02:05.250\nrain (0.50)\n\n")


def player_cues(path) -> list[str]:
    """What a player's WebVTT parser (ffmpeg's) makes of the file: one ASS dialogue text per cue."""
    ass = subprocess.run([ffmpeg_binary(), "-v", "error", "-i", str(path), "-f", "ass", "-"], capture_output=True,
                         text=True, check=True).stdout
    return [line.split(",", 9)[9] for line in ass.splitlines() if line.startswith("Dialogue:")]


def test_a_hostile_label_cannot_forge_cues_or_markup(tmp_path):
    forged = "dog & <b>cat</b>\n\n2\n00:00:00.000 --> 00:00:09.000\nforged"
    write_vtt([Event(0, 1.5, forged, 0.93), Event(1.5, 4, "rain --> x", 0.5)], tmp_path / "t.vtt")
    text = (tmp_path / "t.vtt").read_text(encoding="utf-8")
    assert text.count("-->") == 2 and "<b>" not in text and "&amp;" in text
    # The player shows the label as text, on one line, and only the two real cues.
    assert player_cues(tmp_path / "t.vtt") == [
        "dog & <b>cat</b> 2 00:00:00.000 --> 00:00:09.000 forged (0.93)", "rain --> x (0.50)"]


def test_a_recording_of_exactly_ten_minutes_is_its_624_vggish_windows():
    # 625 hops of 0.96 s are exactly 600 s, but the 625th 0.975 s window would read past the end: VGGish keeps 624.
    events = run([0] * 312 + [1] * 312, hop=0.96, duration=600.0)
    assert [e.label for e in events] == ["dog", "rain"] and events[-1].end == 600.0
