import contextlib
import errno
import os
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from a2i_core.core.audio_io import SAMPLE_RATE, AudioError, claimed_seconds, decode, not_a_file, write_wav


def test_decode_resamples_and_downmixes(tmp_path):
    t = np.arange(44100) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], axis=1) * 0.5
    path = tmp_path / "tone.flac"
    sf.write(path, stereo, 44100)
    wave = decode(path)
    assert wave.dtype == np.float32 and abs(wave.size - 16000) <= 16
    spectrum = np.abs(np.fft.rfft(wave[:16000]))
    assert abs(np.argmax(spectrum) - 440) <= 2  # 1 Hz bins over one second


def test_wav_roundtrip(tmp_path):
    wave = (np.random.default_rng(0).uniform(-0.5, 0.5, 8000)).astype(np.float32)
    write_wav(tmp_path / "a.wav", wave)
    assert np.abs(decode(tmp_path / "a.wav") - wave).max() < 1e-4
    assert [p.name for p in tmp_path.iterdir()] == ["a.wav"]


def test_unreadable_and_missing_files_give_one_clear_error(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00not really audio")
    with pytest.raises(AudioError, match="bad.wav: cannot decode audio"):
        decode(bad)
    with pytest.raises(AudioError, match="no such file"):
        decode(tmp_path / "nope.mp3")


def test_stereo_is_averaged_like_the_reference(tmp_path):
    # ffmpeg's default downmix is (L + R) / sqrt(2); VGGish's reference takes the mean of the channels.
    t = np.arange(16000) / 16000
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 660 * t)], axis=1)
    sf.write(tmp_path / "s.wav", stereo, 16000, subtype="FLOAT")
    assert np.abs(decode(tmp_path / "s.wav") - stereo.mean(axis=1)).max() < 1e-6


# --- Special files, lying headers and names ffmpeg misreads (issue 25) -------------------------------------------

FOUR_GB = 0xFFFFFFF0  # a WAV data size just under RIFF's 32-bit limit: 37 hours of 16 kHz 16-bit mono


def huge_wav(path: Path, head: np.ndarray) -> Path:
    """A 16 kHz 16-bit WAV whose RIFF and data sizes claim 4 GB: ``head``, then silence to the end the header claims.
    Sparse: a few KB on disk, but every claimed byte reads (as zeros), so a decoder really meets 37 hours."""
    data = (np.clip(head, -1, 1) * 32767).astype("<i2").tobytes()
    header = (b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE"
              + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, SAMPLE_RATE, 2 * SAMPLE_RATE, 2, 16)
              + b"data" + struct.pack("<I", FOUR_GB))
    with open(path, "wb") as f:
        f.write(header + data)
        f.truncate(len(header) + FOUR_GB)
    return path


@contextlib.contextmanager
def fifo_never_waited_on(fifo: Path, patience: float = 5.0) -> Iterator[None]:
    """Run the block; should anything in it (ffmpeg included) open ``fifo`` to read, which waits for a writer forever,
    a writer comes after ``patience`` seconds and leaves at once: the reader gets end of file and the test fails
    instead of hanging."""
    done = threading.Event()

    def rescue() -> None:
        if done.wait(patience):
            return
        while not done.wait(0.2):
            with contextlib.suppress(OSError):  # ENXIO: nobody is waiting to read
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    thread = threading.Thread(target=rescue, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def test_special_files_are_named_for_what_they_are_and_never_opened(tmp_path):
    # Before: a FIFO, /dev/zero and a link loop were all "no such file".
    os.mkfifo(tmp_path / "pipe.wav")
    (tmp_path / "loop.wav").symlink_to(tmp_path / "loop.wav")
    (tmp_path / "gone.wav").symlink_to(tmp_path / "nothing.wav")
    (tmp_path / "folder.wav").mkdir()
    (tmp_path / "file").write_bytes(b"")
    expected = {
        tmp_path / "pipe.wav": "is a named pipe, not a file",
        Path("/dev/zero"): "is a character device, not a file",
        tmp_path / "loop.wav": "is a symbolic link loop",
        tmp_path / "gone.wav": f"is a symbolic link to {tmp_path / 'nothing.wav'}, which does not exist",
        tmp_path / "folder.wav": "is a directory, not a file",
        tmp_path / "nope.wav": "no such file or directory",
        tmp_path / "file" / "x.wav": "no such file or directory (a part of its path is a file, not a folder)",
    }
    start = time.monotonic()
    with fifo_never_waited_on(tmp_path / "pipe.wav"):
        for path, reason in expected.items():
            assert not_a_file(path) == reason
            with pytest.raises(AudioError) as caught:
                decode(path)
            assert str(caught.value) == f"{path}: {reason}"
    assert time.monotonic() - start < 5


def test_what_the_file_system_refuses_is_said(tmp_path, monkeypatch):
    # As root everything reads, so the refusals are staged: each is one line, not "no such file" or a traceback.
    sf.write(tmp_path / "locked.wav", np.zeros(160), SAMPLE_RATE)
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    assert not_a_file(tmp_path / "locked.wav") == "permission denied (the file cannot be read)"

    def unsearchable(path: Path) -> os.stat_result:
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(os, "stat", unsearchable)
    assert not_a_file(tmp_path / "x" / "a.wav") == "permission denied (a folder on its path cannot be searched)"


def test_names_ffmpeg_would_misread_decode(tmp_path):
    # Before: "a:b.wav" was the URL of a protocol "a" ("Protocol not found"), and a name that is not UTF-8 was a
    # UnicodeEncodeError traceback in ffmpeg-python that ended the whole run.
    wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(8000) / SAMPLE_RATE)).astype(np.float32)
    for name in ("a:b.wav", os.fsdecode(b"caf\xe9 \x1b[31m.wav")):
        path = tmp_path / name
        write_wav(tmp_path / "plain.wav", wave)
        (tmp_path / "plain.wav").rename(path)  # libsndfile takes no name that is not UTF-8; ffmpeg does
        assert np.abs(decode(path) - wave).max() < 1e-4
        relative = Path(os.path.relpath(path))
        assert decode(relative).size == wave.size


def test_a_header_is_read_for_its_claim_only(tmp_path):
    write_wav(tmp_path / "one.wav", np.zeros(SAMPLE_RATE, np.float32))
    assert claimed_seconds(tmp_path / "one.wav") == pytest.approx(1.0, abs=0.01)
    huge = huge_wav(tmp_path / "huge.wav", np.zeros(10, np.float32))
    assert huge.stat().st_blocks * 512 < 1 << 20  # sparse: the test costs no disk
    assert claimed_seconds(huge) == pytest.approx(FOUR_GB / 2 / SAMPLE_RATE, abs=1)  # 37 h
    (tmp_path / "junk.wav").write_bytes(b"not audio at all")
    assert claimed_seconds(tmp_path / "junk.wav") is None


def test_a_video_gives_its_audio_track_and_one_without_sound_is_named_so(tmp_path):
    import subprocess

    from a2i_core.core.audio_io import ffmpeg_binary

    tone = np.sin(2 * np.pi * 440 * np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE).astype(np.float32) * 0.5
    write_wav(tmp_path / "tone.wav", tone)
    quiet, talking = tmp_path / "quiet.mp4", tmp_path / "talking.mp4"
    video, out = ["-f", "lavfi", "-i", "testsrc=size=64x64:rate=5"], ["-t", "2", "-pix_fmt", "yuv420p"]
    subprocess.run([ffmpeg_binary(), "-y", "-loglevel", "error", *video, *out, str(quiet)], check=True)
    subprocess.run([ffmpeg_binary(), "-y", "-loglevel", "error", *video, "-i", str(tmp_path / "tone.wav"), *out,
                    "-c:a", "aac", str(talking)], check=True)
    with pytest.raises(AudioError, match=r"quiet\.mp4: has no audio stream \(a video without sound\?\)$"):
        decode(quiet)
    heard = decode(talking)
    assert abs(len(heard) - len(tone)) < 0.05 * SAMPLE_RATE
    assert np.corrcoef(heard[4000:20000], tone[4000:20000])[0, 1] > 0.95  # AAC's own delay is compensated


# --- One channel of a file's stereo form (several sounds at once: stereo placement) ------------------------------

def run_ffmpeg(*args: str) -> bytes:
    import subprocess

    from a2i_core.core.audio_io import ffmpeg_binary

    return subprocess.run([ffmpeg_binary(), "-nostdin", "-y", "-loglevel", "error", *args], check=True,
                          capture_output=True).stdout


def sine(hz: float, seconds: float = 1.0, rate: int = SAMPLE_RATE) -> np.ndarray:
    return np.sin(2 * np.pi * hz * np.arange(round(seconds * rate)) / rate)


def test_a_tone_in_the_left_channel_is_heard_in_channel_0_only(tmp_path):
    from a2i_core.core.audio_io import channel_layout

    left = 0.5 * sine(440)
    sf.write(tmp_path / "left.wav", np.stack([left, np.zeros_like(left)], axis=1), SAMPLE_RATE, subtype="FLOAT")
    assert channel_layout(tmp_path / "left.wav") == (2, "stereo")
    assert np.abs(decode(tmp_path / "left.wav", channel=0) - left).max() < 1e-6
    assert np.abs(decode(tmp_path / "left.wav", channel=1)).max() == 0
    assert np.abs(decode(tmp_path / "left.wav") - left / 2).max() < 1e-6  # the mono mix is unchanged: the mean


def six_channels(rate: int) -> np.ndarray:
    """(samples, 6): a distinct tone in each channel of 5.1 (FL FR FC LFE SL SR), so that a wrong matrix shows."""
    return np.stack([0.2 * sine(hz, rate=rate) for hz in (300, 500, 700, 90, 1100, 1300)], axis=1)


def standard_stereo(six: np.ndarray) -> np.ndarray:
    """(samples, 2): ITU-R BS.775's downmix, L = FL + C/sqrt(2) + SL/sqrt(2) (LFE dropped), as ffmpeg's -ac 2 makes
    it, scaled so that each row's gains sum to 1."""
    fl, fr, fc, _, sl, sr = six.T
    g = np.sqrt(0.5)
    return np.stack([fl + g * fc + g * sl, fr + g * fc + g * sr], axis=1) / (1 + 2 * g)


def test_a_51_file_is_downmixed_to_stereo_by_the_standard_matrix_before_a_channel_is_taken(tmp_path):
    from a2i_core.core.audio_io import channel_layout

    six = six_channels(SAMPLE_RATE)
    sf.write(tmp_path / "six.flac", six, SAMPLE_RATE, subtype="PCM_24")
    assert channel_layout(tmp_path / "six.flac") == (6, "5.1(side)")
    source = sf.read(tmp_path / "six.flac")[0]  # (samples, 6) as stored (24-bit)
    want = standard_stereo(source)
    # ffmpeg's own -ac 2: the same matrix, unscaled (its left peaks at 2.41x a channel's).
    ffmpeg_stereo = np.frombuffer(run_ffmpeg("-i", str(tmp_path / "six.flac"), "-ac", "2", "-f", "f32le",
                                             "-acodec", "pcm_f32le", "pipe:"), np.float32).reshape(-1, 2)
    left, right = decode(tmp_path / "six.flac", channel=0), decode(tmp_path / "six.flac", channel=1)
    assert np.abs(left - want[:, 0]).max() < 1e-6 and np.abs(right - want[:, 1]).max() < 1e-6
    assert np.abs(left - ffmpeg_stereo[:, 0] / (1 + np.sqrt(2))).max() < 1e-6
    # The mono mix (fed to the encoder everywhere) is exactly the mean of the two channels, as for a stereo file.
    assert np.abs(decode(tmp_path / "six.flac") - (left + right) / 2).max() < 1e-6


def test_a_channel_is_resampled_as_the_mono_mix_is(tmp_path):
    six = six_channels(48_000)
    sf.write(tmp_path / "six.wav", six, 48_000, subtype="FLOAT")
    sf.write(tmp_path / "left.wav", standard_stereo(six)[:, 0], 48_000, subtype="FLOAT")
    heard = decode(tmp_path / "six.wav", channel=0)
    assert heard.size == 16_000
    assert np.abs(heard - decode(tmp_path / "left.wav")).max() < 1e-5


def test_a_mono_file_is_both_of_its_channels(tmp_path):
    sf.write(tmp_path / "mono.wav", 0.5 * sine(440, rate=44_100), 44_100, subtype="PCM_16")
    mono = decode(tmp_path / "mono.wav")
    # Not swresample's mono -> stereo upmix, which gives each channel the file 3 dB down.
    assert np.array_equal(decode(tmp_path / "mono.wav", channel=0), mono)
    assert np.array_equal(decode(tmp_path / "mono.wav", channel=1), mono)


def test_opposite_channels_cancel_in_the_mono_mix_but_each_channel_is_heard(tmp_path):
    wave = 0.5 * sine(440)
    sf.write(tmp_path / "phase.wav", np.stack([wave, -wave], axis=1), SAMPLE_RATE, subtype="FLOAT")
    assert np.abs(decode(tmp_path / "phase.wav")).max() < 1e-7
    assert np.abs(decode(tmp_path / "phase.wav", channel=1) + wave).max() < 1e-6


@pytest.mark.parametrize("channel", [2, -1, True, "0"])
def test_a_channel_other_than_left_or_right_is_refused(tmp_path, channel):
    from a2i_core.core.audio_io import decode_stream

    write_wav(tmp_path / "a.wav", np.zeros(1600, np.float32))
    with pytest.raises(ValueError, match="channel must be 0 .left., 1 .right. or None"):
        decode(tmp_path / "a.wav", channel=channel)
    with pytest.raises(ValueError, match="channel must be"):
        decode_stream(tmp_path / "a.wav", channel=channel)  # refused at the call, before ffmpeg starts


def test_layouts_are_read_from_the_header_and_counted(tmp_path):
    from a2i_core.core.audio_io import channel_layout, layout_channels

    assert [layout_channels(n) for n in ("mono", "stereo", "5.1(side)", "7.1", "downmix", "6 channels",
                                         "3 channels (FL+FR+LFE)", "ambisonic 1", "")] == [1, 2, 6, 8, 2, 6, 3,
                                                                                            None, None]
    sf.write(tmp_path / "quad.flac", np.zeros((1600, 4)), SAMPLE_RATE)
    assert channel_layout(tmp_path / "quad.flac") == (4, "quad")
    (tmp_path / "junk.wav").write_bytes(b"not audio at all")
    assert channel_layout(tmp_path / "junk.wav") is None
    assert channel_layout(tmp_path / "nope.wav") is None
    os.mkfifo(tmp_path / "fifo.wav")
    start = time.monotonic()
    with fifo_never_waited_on(tmp_path / "fifo.wav"):
        assert channel_layout(tmp_path / "fifo.wav") is None
    assert time.monotonic() - start < 2  # never opened: ffmpeg would wait on the pipe until rescued after 5 s


def test_a_video_without_sound_is_named_so_for_a_channel_too(tmp_path):
    from a2i_core.core.audio_io import channel_layout, decode_stream

    quiet = tmp_path / "quiet.mp4"
    run_ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:rate=5", "-t", "1", "-pix_fmt", "yuv420p", str(quiet))
    assert channel_layout(quiet) is None
    for channel in (0, 1):
        with pytest.raises(AudioError, match=r"quiet\.mp4: has no audio stream \(a video without sound\?\)$"):
            decode(quiet, channel=channel)
        with pytest.raises(AudioError, match="has no audio stream"):
            list(decode_stream(quiet, channel=channel))
