"""`a2i generate` against what a careless or hostile user hands it (issue 25): special files, a header claiming days
of audio, names that would forge or restyle lines. The command-line run itself is in test_generate.py."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from a2i_core.audio.encoder import load_audio_encoder
from a2i_core.audio.features import embed_path
from a2i_core.core.audio_io import SAMPLE_RATE, STREAM_CHUNK_SAMPLES
from a2i_core.core.errors import A2IError, OneLineFormatter, exit_cleanly, printable
from a2i_core.serve import generate
from a2i_core.serve.generate import DecodeProgress, duration_text, expand_inputs
from tests.core.test_audio_io import fifo_never_waited_on, huge_wav

CPU = torch.device("cpu")


def tone(seconds: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.mark.parametrize(("text", "shown"), [
    ("a\nerror: forged.wav", "a\\nerror: forged.wav"),  # a line of its own, before
    ("cr\roverwrite", "cr\\roverwrite"),
    ("esc\x1b[31mred\x1b[0m", "esc\\x1b[31mred\\x1b[0m"),  # terminal colours
    ("c1\x85\x9b", "c1\\x85\\x9b"),  # NEL (a newline to some terminals) and CSI
    ("bidi\u202egnp.exe\u2066x\u2069", "bidi\\u202egnp.exe\\u2066x\\u2069"),  # reordered text
    ("zero\u200bwidth\u2028sep", "zero\\u200bwidth\\u2028sep"),
    (os.fsdecode(b"latin1 caf\xe9"), "latin1 caf\\xe9"),  # a byte that is not UTF-8: its value
    ("tab\there", "tab\\there"),
    ("sirène d'été 犬 🐕 plain", "sirène d'été 犬 🐕 plain"),  # any script is printable and kept
])
def test_printable_keeps_a_line_one_line(text, shown):
    assert printable(text) == shown
    assert printable(text).isprintable() or " " in shown


def test_log_lines_and_exit_lines_are_escaped(capsys):
    record = logging.LogRecord("a2i", logging.INFO, __file__, 1, "%s: decoded", ("x\nERROR forged",), None)
    assert OneLineFormatter("%(levelname)s %(message)s").format(record) == "INFO x\\nERROR forged: decoded"
    try:
        raise ValueError("boom")
    except ValueError:
        record.exc_info = sys.exc_info()
    assert "\nTraceback" in OneLineFormatter().format(record)  # a traceback keeps its lines

    @exit_cleanly
    def main() -> None:
        raise A2IError("b\nerror: forged.wav: no such file or directory")

    with pytest.raises(SystemExit):
        main()
    assert capsys.readouterr().err == "error: b\\nerror: forged.wav: no such file or directory\n"


def test_inputs_are_named_for_what_they_are(tmp_path):
    # Before: every one of these was "no such file or directory" (a directory's pipe or broken link: not a word).
    folder = tmp_path / "in"
    (folder / "sub" / "nested.wav").mkdir(parents=True)  # a folder with an audio suffix: searched, not reported
    sf.write(folder / "good.wav", tone(0.5), SAMPLE_RATE)
    os.mkfifo(folder / "pipe.wav")
    (folder / "gone.mp3").symlink_to(folder / "nothing.mp3")
    (folder / "notes.txt").write_text("not a sound")
    os.mkfifo(tmp_path / "fifo.ogg")
    (tmp_path / "loop.wav").symlink_to(tmp_path / "loop.wav")
    (tmp_path / "empty").mkdir()
    with fifo_never_waited_on(folder / "pipe.wav"), fifo_never_waited_on(tmp_path / "fifo.ogg"):
        inputs, problems = expand_inputs([folder, Path("/dev/zero"), tmp_path / "fifo.ogg", tmp_path / "loop.wav",
                                          tmp_path / "empty", tmp_path / "nope.wav"])
    assert inputs == [(folder / "good.wav", "good")]
    assert problems[:6] == [
        f"{folder / 'gone.mp3'}: is a symbolic link to {folder / 'nothing.mp3'}, which does not exist",
        f"{folder / 'pipe.wav'}: is a named pipe, not a file",
        "/dev/zero: is a character device, not a file",
        f"{tmp_path / 'fifo.ogg'}: is a named pipe, not a file",
        f"{tmp_path / 'loop.wav'}: is a symbolic link loop",
        f"{tmp_path / 'empty'}: a directory with no audio files (.aac, .aif, .aiff, .au, .caf, .flac, .m4a, .mkv, "
        ".mp3, .mp4, .ogg, .opus, .wav, .webm, .wma)",
    ]
    assert problems[6:] == [f"{tmp_path / 'nope.wav'}: no such file or directory"]


def test_a_header_claiming_days_is_heard_up_to_the_cap_and_no_further(tmp_path, tiny_vggish_dir):
    # Before: a 4 GB header of silence decoded and embedded for hours (killed after 180 s with nothing printed).
    encoder = load_audio_encoder(tiny_vggish_dir, postprocess=False)
    frontend = encoder.place(CPU)
    head = tone(3.0)
    huge = huge_wav(tmp_path / "huge.wav", head)
    cap = 2 * SAMPLE_RATE
    seen: list[int] = []
    start = time.monotonic()
    frames, decoded, rms = embed_path(encoder, frontend, huge, batch_size=4, device=CPU, max_samples=cap,
                                      progress=seen.append)
    assert time.monotonic() - start < 10
    assert cap < decoded <= cap + STREAM_CHUNK_SAMPLES  # one chunk past the cap says "longer"; then ffmpeg stops
    assert seen == sorted(seen) and seen[-1] == decoded
    # What was heard is the first 2 s, exactly: the same numbers as a 2 s file of the same samples.
    first, _ = sf.read(huge, frames=cap, dtype="int16")
    sf.write(tmp_path / "two.wav", first, SAMPLE_RATE, subtype="PCM_16")
    whole, samples, whole_rms = embed_path(encoder, frontend, tmp_path / "two.wav", batch_size=4, device=CPU)
    assert samples == cap and np.array_equal(frames, whole) and rms == pytest.approx(whole_rms, rel=1e-6)
    # A recording exactly as long as the cap is heard whole and is not "longer".
    assert embed_path(encoder, frontend, tmp_path / "two.wav", batch_size=4, device=CPU, max_samples=cap)[1] == cap


def test_progress_is_throttled_with_the_speed_and_the_time_left(monkeypatch, caplog):
    reads = []
    monkeypatch.setattr(generate, "claimed_seconds", lambda path: reads.append(path) or 7200.0)
    ticks = iter([0.0, 1.0, 12.0, 13.0, 24.0])
    progress = DecodeProgress(Path("long\n.wav"), SAMPLE_RATE, 3600 * SAMPLE_RATE, every=10, clock=lambda: next(ticks))
    with caplog.at_level(logging.INFO, logger=generate.__name__):
        for seconds in (10, 240, 250, 480):  # at 1, 12, 13 and 24 s: lines at 12 and 24 only
            progress(seconds * SAMPLE_RATE)
    assert [r.getMessage() for r in caplog.records] == [
        "long\n.wav: 4 min 00 s of 1 h 00 min (the cap; its header claims 2 h 00 min) decoded (20x real time), "
        "about 2 min 48 s left",
        "long\n.wav: 8 min 00 s of 1 h 00 min (the cap; its header claims 2 h 00 min) decoded (20x real time), "
        "about 2 min 36 s left"]  # the handler escapes the name (OneLineFormatter)
    assert len(reads) == 1  # the header is read once, and only when a line is due
    caplog.clear()
    monkeypatch.setattr(generate, "claimed_seconds", lambda path: None)
    ticks = iter([0.0, 30.0])
    unknown = DecodeProgress(Path("stream.ogg"), SAMPLE_RATE, None, every=10, clock=lambda: next(ticks))
    with caplog.at_level(logging.INFO, logger=generate.__name__):
        unknown(90 * SAMPLE_RATE)
    assert [r.getMessage() for r in caplog.records] == ["stream.ogg: 1 min 30 s decoded (3x real time)"]


def test_durations_read_as_a_person_says_them():
    assert [duration_text(s) for s in (0.4, 42, 185, 7380, 134217.7)] == [
        "0 s", "42 s", "3 min 05 s", "2 h 03 min", "37 h 16 min"]
