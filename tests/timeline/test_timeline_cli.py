"""`a2i timeline` on the demo's models: a recording of several sounds becomes its events (CSV, WebVTT), a storyboard
and a film with the audio muxed in; and every odd or hostile input is one line, with nothing lost."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from a2i_core import cli
from a2i_core.core.audio_io import SAMPLE_RATE, decode, ffmpeg_binary, write_wav
from a2i_core.core.files import hold_folder
from a2i_core.diffusion.images import SETTINGS_KEY, png_text
from a2i_core.offline.workspace import tool_env
from a2i_core.timeline.events import read_csv
from a2i_core.timeline.make import BUSY, LOCK_NAME
from a2i_core.timeline.video import film_info
from tests.core.test_audio_io import huge_wav

pytestmark = pytest.mark.e2e


def _timeline(*args: str) -> subprocess.CompletedProcess:
    """`a2i timeline` as a user runs it: its own process."""
    return subprocess.run([sys.executable, "-m", "a2i_core.cli", "timeline", *args, "--device", "cpu"],
                          env=tool_env(), capture_output=True, text=True)


def _timeline_here(*args: str) -> SimpleNamespace:
    """The same command in this process (the models' imports paid once for many runs), with the same streams."""
    result = CliRunner().invoke(cli.app, ["timeline", *args, "--device", "cpu"])
    return SimpleNamespace(returncode=result.exit_code, stdout=result.stdout, stderr=result.stderr)


@pytest.fixture(scope="module")
def recording(demo_workspace) -> Path:
    """One of the timeline stage's evaluation recordings: test clips end to end, with their reference."""
    return sorted((demo_workspace[0] / "data" / "timelines").iterdir())[0]


@pytest.fixture(scope="module")
def made(demo_workspace, recording, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("timeline") / "out"
    result = _timeline(str(recording / "audio.wav"), "--out", str(out), "--project", str(demo_workspace[0]),
                       "--fps", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def test_a_recording_becomes_events_a_storyboard_and_a_film(made, recording):
    out, result = made
    events = read_csv(out / "timeline.csv")
    reference = read_csv(recording / "reference.csv")
    assert events[0].start == 0 and abs(events[-1].end - reference[-1].end) < 1e-3  # the whole recording, tiled
    labelled = [e for e in events if e.label is not None]
    assert {e.label for e in labelled} <= {e.label for e in reference if e.label is not None}
    vtt = (out / "timeline.vtt").read_text()
    assert vtt.startswith("WEBVTT") and vtt.count(" --> ") == len(labelled)
    keyframes = sorted((out / "keyframes").iterdir())
    assert len(keyframes) == len(labelled) and (out / "storyboard.png").is_file()
    settings = json.loads(png_text(keyframes[0])[SETTINGS_KEY])
    assert settings["event"]["label"] == labelled[0].label and "seed" in settings and "steps" in settings
    for event in labelled:  # what the command prints: a line per event
        assert event.label in result.stdout


def test_the_film_is_h264_with_the_audio_and_lasts_as_long(made, recording):
    out, _ = made
    info = film_info(out / "film.mp4")
    audio = decode(recording / "audio.wav")
    seconds = len(audio) / SAMPLE_RATE
    assert info["video_codec"] == "h264" and info["pix_fmt"] == "yuv420p" and info["faststart"]
    assert abs(info["duration"] - seconds) <= 1 / info["fps"] + 1e-3
    heard = decode(out / "film.mp4")[: len(audio)]  # the audio track, back at 16 kHz
    assert np.corrcoef(heard[: len(audio)], audio[: len(heard)])[0, 1] > 0.95
    assert not (out / "film.mp4.frames").exists()  # the frames go once the film is whole


def _ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_binary(), "-y", "-loglevel", "error", *args], check=True)


def _errors(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_odd_recordings_each_make_a_timeline(demo_workspace, recording, tmp_path):
    """Shorter than one window (padded, with a note), stereo at 44.1 kHz, and a video (its audio track)."""
    project = str(demo_workspace[0])
    source = recording / "audio.wav"
    _ffmpeg("-i", str(source), "-t", "0.5", str(tmp_path / "short.wav"))
    _ffmpeg("-i", str(source), "-ac", "2", "-ar", "44100", str(tmp_path / "stereo.flac"))
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:rate=5", "-i", str(source), "-shortest", "-pix_fmt", "yuv420p",
            "-c:a", "aac", str(tmp_path / "video.mp4"))
    short = _timeline_here(str(tmp_path / "short.wav"), "--out", str(tmp_path / "a"), "--project", project)
    assert short.returncode == 0, short.stderr[-2000:]
    assert "shorter than one 0.975 s VGGish example: padded" in short.stderr
    events = read_csv(tmp_path / "a" / "timeline.csv")
    assert len(events) == 1 and events[0].end == pytest.approx(0.5, abs=1e-3)
    assert film_info(tmp_path / "a" / "film.mp4")["frames"] == 2  # 0.5 s at 4 frames/s
    reference = [e.label for e in read_csv(recording / "reference.csv") if e.label is not None]
    for name in ("stereo.flac", "video.mp4"):
        result = _timeline_here(str(tmp_path / name), "--out", str(tmp_path / name.split(".")[0]), "--project", project,
                           "--no-film")
        assert result.returncode == 0, result.stderr[-2000:]
        labels = [e.label for e in read_csv(tmp_path / name.split(".")[0] / "timeline.csv") if e.label is not None]
        assert labels and set(labels) <= set(reference)
        assert not (tmp_path / name.split(".")[0] / "film.mp4").exists()


def test_what_cannot_be_a_timeline_is_one_line_and_writes_nothing(demo_workspace, recording, tmp_path):
    project = str(demo_workspace[0])
    silence = tmp_path / "silence.wav"
    write_wav(silence, np.zeros(5 * SAMPLE_RATE, np.float32))
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:rate=5", "-t", "2", "-pix_fmt", "yuv420p",
            str(tmp_path / "mute.mp4"))
    long = huge_wav(tmp_path / "claims_37_hours.wav", np.zeros(16000, np.float32))
    cases = {
        (str(silence),): "silent (RMS below -80 dBFS)",
        (str(tmp_path / "mute.mp4"),): "has no audio stream",
        (str(tmp_path / "nowhere.wav"),): "no such file or directory",
        (str(recording / "audio.wav"), "--fps", "0"): "--fps: must be in (0, 60], got 0",
        (str(recording / "audio.wav"), "--fps", "1000"): "--fps: must be in (0, 60], got 1000",
        # An hour (generate.max_seconds) at 20 frames/s is past timeline.max_frames: refused from the header alone.
        (str(long), "--fps", "20"): "72,000 frames, more than timeline.max_frames (36,000)",
    }
    for args, expected in cases.items():
        out = tmp_path / "out"
        start = time.monotonic()
        result = _timeline_here(*args, "--out", str(out), "--project", project)
        assert result.returncode == 1 and _errors(result) == [result.stderr.strip().splitlines()[-1]], result.stderr
        assert expected in _errors(result)[0] and "Traceback" not in result.stderr
        assert not (out / "timeline.csv").exists() and not (out / "film.mp4").exists()
        assert time.monotonic() - start < 60  # the 37-hour header is refused before it is decoded


def test_a_folder_another_timeline_is_using_is_refused_and_nothing_in_it_is_touched(demo_workspace, recording,
                                                                                  tmp_path):
    out = tmp_path / "out"
    args = (str(recording / "audio.wav"), "--out", str(out), "--project", str(demo_workspace[0]))
    with hold_folder(out, LOCK_NAME, BUSY):  # another process's timeline, in the middle of its run
        (out / "timeline.csv").write_text("theirs")
        second = _timeline_here(*args)
    assert second.returncode == 1
    assert _errors(second) == [f"error: {out}: another timeline is being made in this folder right now; wait for it "
                               "to finish or choose another folder"]
    assert (out / "timeline.csv").read_text() == "theirs"
    assert _timeline_here(*args, "--no-film").returncode == 0  # once it is done, the folder is free
