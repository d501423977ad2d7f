"""The timeline stage in the demo: test clips end to end with known boundaries, scored as the sound-event-detection
field scores (sed_eval), its keyframes drawing the sound they label, its film steady inside events."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from a2i_core.core.audio_io import SAMPLE_RATE, decode
from a2i_core.timeline.events import read_csv
from a2i_core.timeline.video import film_info
from tests.helpers import dvc

pytestmark = pytest.mark.e2e


def test_the_demo_s_timelines_meet_the_targets(demo_workspace):
    ws, printed = demo_workspace
    report = json.loads((ws / "metrics" / "timeline_report.json").read_text())
    headline = json.loads((ws / "metrics" / "timeline.json").read_text())
    assert headline == {key: report[key] for key in headline}
    assert report["recordings"] == 8 and report["reference_events"] >= 3 * 8
    assert report["segment_f1"] >= 0.8  # segment-based F1 at 1 s (sed_eval)
    assert report["event_f1"] is not None and report["event_f1"] > 0.5  # onset collar 0.5 s: half a VGGish window
    assert report["keyframes_zero_shot_top1"] >= 0.8 and report["keyframes"] >= 16
    assert report["flicker_inside"] < report["flicker_across"]  # the picture holds inside an event, moves across
    assert "timelines: segment F1" in printed and "storyboard.png" in printed


def test_each_recording_has_its_reference_timeline_storyboard_and_the_first_a_film(demo_workspace):
    ws, _ = demo_workspace
    scores = pd.read_csv(ws / "metrics" / "timeline_scores.csv")
    names = sorted(p.name for p in (ws / "data" / "timelines").iterdir())
    assert scores["recording"].tolist() == names
    for name in names:
        reference = read_csv(ws / "data" / "timelines" / name / "reference.csv")
        seconds = len(decode(ws / "data" / "timelines" / name / "audio.wav")) / SAMPLE_RATE
        assert reference[-1].end == pytest.approx(seconds, abs=1e-3)
        made = ws / "metrics" / "timelines" / name
        events = read_csv(made / "timeline.csv")
        assert events[-1].end == pytest.approx(seconds, abs=1e-3)
        keyframes = sorted((made / "keyframes").iterdir())
        assert len(keyframes) == sum(e.label is not None for e in events)
    first = ws / "metrics" / "timelines" / names[0]
    info = film_info(first / "film.mp4")
    assert info["video_codec"] == "h264" and info["faststart"]
    with Image.open(first / "film.webp") as preview:
        assert preview.n_frames > 1  # the moving preview README shows
    assert not (ws / "metrics" / ".timelines.frames").exists() or not any((ws / "metrics" / ".timelines.frames")
                                                                         .rglob("*.png"))


def test_the_timeline_metrics_are_tracked(demo_workspace):
    ws, _ = demo_workspace
    shown = json.loads(dvc(ws, "metrics", "show", "--json").stdout)
    metrics = next(iter(shown.values()))["data"]["metrics/timeline.json"]["data"]
    assert {"segment_f1", "event_f1", "keyframes_zero_shot_top1", "flicker_inside", "flicker_across"} <= set(metrics)


def test_a_test_split_of_one_class_gives_no_recordings_and_stops_nothing(tmp_path, monkeypatch):
    """A small folder of your own sounds: the pipeline goes on, the timeline's metrics are null and say why."""
    from a2i_core.core.params import load_params
    from a2i_core.pipeline import timeline

    tone = np.sin(np.arange(3 * SAMPLE_RATE) / 10).astype(np.float32)
    monkeypatch.setattr(timeline, "test_clips", lambda candidates, audio: [(f"dog_{i}", "a dog", tone)
                                                                         for i in range(4)])
    cfg = load_params().timeline
    reason = timeline.build_set(cfg, tmp_path / "candidates.parquet", tmp_path / "audio", tmp_path / "recordings")
    assert reason.startswith("the test split has clips of 1 class(es) at least 1.5 s long")
    assert (tmp_path / "recordings").is_dir() and not any((tmp_path / "recordings").iterdir())
    out = tmp_path / "metrics"
    full = timeline.timeline_eval(cfg, load_params().render, "cpu", tmp_path / "candidates.parquet", tmp_path / "audio",
                                  tmp_path / "mapper", tmp_path / "audio_encoder", tmp_path / "sd3", tmp_path / "clip",
                                  tmp_path / "recordings", out / "timelines", out / "timeline.json",
                                  out / "timeline_report.json", out / "timeline_scores.csv")
    assert full["recordings"] == 0 and full["skipped"] == reason  # no model was needed, none was loaded
    assert json.loads((out / "timeline.json").read_text()) == dict.fromkeys(timeline.HEADLINE)
    assert (out / "timelines").is_dir() and (out / "timeline_scores.csv").is_file()
