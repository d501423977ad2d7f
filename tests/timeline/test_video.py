"""A film's frames on disk and its MP4: the encoding checked from the file itself (codec, pixel format, fast start,
duration, the sound decoded back), resuming, one film per folder at a time, a full disk, odd sizes and odd sound
sources, and the WebP preview."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image
from scipy import signal as sps

from a2i_core.core.audio_io import SAMPLE_RATE, decode, write_wav
from a2i_core.core.errors import A2IError
from a2i_core.timeline import video
from a2i_core.timeline.video import FrameFolder, encode_film, film_frames, film_info, preview

FPS = 8
COUNT = 24  # 3 s at 8 frames/s
COLOURS = [(i * 10, 255 - i * 10, (i * 37) % 256) for i in range(COUNT)]


def _frames(folder: Path, count: int = COUNT, size: tuple[int, int] = (64, 64)) -> FrameFolder:
    frames = FrameFolder(folder, count)
    for i in range(count):
        frames.save(i, Image.new("RGB", size, COLOURS[i % len(COLOURS)]))
    return frames


def _chirp(seconds: float) -> np.ndarray:
    """A sine sweeping 200 Hz -> 1.1 kHz: unlike a steady tone, it lines up with itself at one lag only."""
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.5 * np.sin(2 * np.pi * (200 + 150 * t) * t)).astype(np.float32)


def _aligned_correlation(got: np.ndarray, want: np.ndarray, max_lag: int = SAMPLE_RATE // 4) -> float:
    """Correlation of ``got`` with ``want`` at the lag (within ``max_lag``: a codec's delay) where it is best."""
    full = sps.correlate(got, want, mode="full")  # index len(want) - 1 is lag 0
    centre = len(want) - 1
    window = full[max(centre - max_lag, 0):centre + max_lag + 1]
    lag = int(np.argmax(window)) + max(centre - max_lag, 0) - centre
    got, want = got[max(lag, 0):], want[max(-lag, 0):]
    n = min(len(got), len(want))
    return float(np.corrcoef(got[:n], want[:n])[0, 1])


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray]:
    """One film made once: (mp4, its sound's WAV, the sound)."""
    root = tmp_path_factory.mktemp("film")
    wave = _chirp(COUNT / FPS)
    write_wav(root / "sound.wav", wave)
    frames = _frames(root / "frames")
    with frames.lock():
        encode_film(frames, FPS, root / "sound.wav", root / "film.mp4")
    return root / "film.mp4", root / "sound.wav", wave


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_the_film_is_h264_yuv420p_with_its_index_first_and_the_sound_s_length(film) -> None:
    mp4, _, wave = film
    info = film_info(mp4)
    assert (info["video_codec"], info["pix_fmt"], info["audio_codec"]) == ("h264", "yuv420p", "aac")
    assert info["faststart"] is True
    assert (info["width"], info["height"], info["frames"], info["fps"]) == (64, 64, COUNT, FPS)
    seconds = len(wave) / SAMPLE_RATE
    assert abs(info["duration"] - seconds) <= 1 / FPS
    assert abs(info["audio_duration"] - seconds) <= 1 / FPS
    assert sorted(p.name for p in mp4.parent.iterdir()) == ["film.mp4", "frames", "sound.wav"]  # no temp left


def test_the_sound_decodes_back_to_the_input(film) -> None:
    mp4, _, wave = film
    back = decode(mp4)  # the film's audio track, as any recording is read
    assert abs(len(back) - len(wave)) <= SAMPLE_RATE / FPS
    assert _aligned_correlation(back, wave) > 0.95
    other = np.random.default_rng(0).normal(scale=0.3, size=len(wave)).astype(np.float32)
    assert abs(_aligned_correlation(back, other)) < 0.2  # the check can fail


def test_the_frames_are_in_order(film) -> None:
    mp4, _, _ = film
    means = [frame.mean(axis=(0, 1)) for frame in film_frames(mp4)]
    assert len(means) == COUNT
    np.testing.assert_allclose(means, COLOURS, atol=6)  # yuv420p rounding of flat colours


def test_faststart_is_read_from_the_file(tmp_path: Path) -> None:
    plain = tmp_path / "plain.mp4"
    writer = imageio_ffmpeg.write_frames(str(plain), (64, 64), fps=FPS, macro_block_size=1, ffmpeg_log_level="quiet")
    writer.send(None)
    for _ in range(4):
        writer.send(np.zeros((64, 64, 3), np.uint8))
    writer.close()
    info = film_info(plain)
    assert info["faststart"] is False  # ffmpeg's default puts the index last
    assert info["audio_codec"] is None and info["audio_duration"] is None


def test_missing_lists_deleted_cut_off_foreign_and_wrong_sized_frames(tmp_path: Path) -> None:
    frames = _frames(tmp_path / "frames", count=10)
    assert frames.missing() == []
    frames.path(3).unlink()
    frames.path(7).unlink()
    assert frames.missing() == [3, 7]  # a rerun makes just these
    data = frames.path(1).read_bytes()
    frames.path(1).write_bytes(data[: len(data) // 2])  # a frame cut off by a crash outside save
    Image.new("RGB", (64, 64)).save(frames.path(5), format="JPEG")  # not a PNG, whatever its name
    Image.new("RGB", (32, 64)).save(frames.path(6), format="PNG")  # another size
    frames.path(8).unlink()
    frames.path(8).mkdir()  # a folder in a frame's place
    assert frames.missing() == [1, 3, 5, 6, 7, 8]
    for i in frames.missing():
        if frames.path(i).is_dir():
            frames.path(i).rmdir()
        frames.save(i, Image.new("RGB", (64, 64), COLOURS[i]))
    assert frames.missing() == []


def test_the_size_given_decides_which_frames_are_right(tmp_path: Path) -> None:
    _frames(tmp_path / "frames", count=3, size=(32, 32))
    assert FrameFolder(tmp_path / "frames", 3, size=(64, 64)).missing() == [0, 1, 2]  # made at another size: again
    assert FrameFolder(tmp_path / "frames", 3).missing() == []
    with pytest.raises(ValueError, match="32x32"):
        FrameFolder(tmp_path / "frames", 3, size=(64, 64)).save(0, Image.new("RGB", (32, 32)))


@pytest.mark.parametrize("count", [0, -1, 2.5, True, None])
def test_a_folder_of_no_frames_is_refused(tmp_path: Path, count: object) -> None:
    with pytest.raises(A2IError, match="at least one frame"):
        FrameFolder(tmp_path, count)  # type: ignore[arg-type]


def test_frame_indices_outside_the_film_are_refused(tmp_path: Path) -> None:
    frames = FrameFolder(tmp_path, 3)
    assert frames.path(2).name == "frame_000002.png"
    for i in (-1, 3):
        with pytest.raises(IndexError):
            frames.path(i)


def test_a_film_with_frames_missing_is_refused_before_ffmpeg_starts(tmp_path: Path, monkeypatch) -> None:
    frames = _frames(tmp_path / "frames", count=6)
    frames.path(4).unlink()
    frames.path(2).unlink()

    def no_ffmpeg(*args, **kwargs):
        raise AssertionError("ffmpeg started")

    monkeypatch.setattr(imageio_ffmpeg, "write_frames", no_ffmpeg)
    with pytest.raises(A2IError) as err:
        encode_film(frames, FPS, None, tmp_path / "film.mp4")
    assert "2 of 6 frames" in _one_line(err) and "frame_000002.png" in str(err.value)
    assert not (tmp_path / "film.mp4").exists()


def test_a_second_film_from_the_same_folder_is_refused_while_the_first_runs(tmp_path: Path) -> None:
    first, second = FrameFolder(tmp_path / "frames", 4), FrameFolder(tmp_path / "frames", 4)
    with first.lock():
        with pytest.raises(A2IError) as err, second.lock():
            pass
        assert str(tmp_path / "frames") in _one_line(err) and "another film" in str(err.value)
    with second.lock():  # released on exit
        pass
    with pytest.raises(RuntimeError), first.lock():
        raise RuntimeError("a crash inside")
    with second.lock():  # and on an exception
        pass


def test_the_lock_is_held_across_processes_and_freed_when_its_holder_dies(tmp_path: Path) -> None:
    holder = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from a2i_core.timeline.video import FrameFolder
        with FrameFolder(Path({str(tmp_path / "frames")!r}), 4).lock():
            print("locked", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        with pytest.raises(A2IError, match="another film"), FrameFolder(tmp_path / "frames", 4).lock():
            pass
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # a crash: no finally, no exit handler
        proc.wait()
    with FrameFolder(tmp_path / "frames", 4).lock():
        pass


def _full_disk_after(sent_ok: int):
    """A stand-in for imageio_ffmpeg.write_frames whose ffmpeg runs out of disk after ``sent_ok`` frames."""

    def write_frames(path, size, **kwargs):
        Path(path).write_bytes(b"\0" * 100)  # what ffmpeg had written before the disk filled
        sent = -1  # the first send(None) only starts it
        while True:
            yield
            sent += 1
            if sent > sent_ok:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return write_frames


def test_a_full_disk_leaves_no_film_and_keeps_the_frames(tmp_path: Path, monkeypatch) -> None:
    frames = _frames(tmp_path / "frames", count=6)
    monkeypatch.setattr(imageio_ffmpeg, "write_frames", _full_disk_after(3))
    with pytest.raises(A2IError) as err:
        encode_film(frames, FPS, None, tmp_path / "out" / "film.mp4")
    line = _one_line(err)
    assert "no space left" in line and "rerun resumes" in line and str(frames.folder) in line
    assert list((tmp_path / "out").iterdir()) == []  # neither the film nor its temporary file
    assert frames.missing() == []


def test_a_full_disk_while_saving_a_frame_leaves_no_frame(tmp_path: Path, monkeypatch) -> None:
    frames = _frames(tmp_path / "frames", count=3)
    frames.path(2).unlink()

    def full(image, path, text=None):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(video, "save_png", full)
    with pytest.raises(A2IError) as err:
        frames.save(2, Image.new("RGB", (64, 64)))
    assert "no space left" in _one_line(err) and "rerun resumes" in str(err.value)
    assert frames.missing() == [2]


def test_ffmpeg_failing_to_write_leaves_no_film_and_says_one_line(tmp_path: Path) -> None:
    frames = _frames(tmp_path / "frames", count=COUNT)
    write_wav(tmp_path / "sound.wav", _chirp(COUNT / FPS))
    # The ffmpeg run may write 4 kB: past that its writes fail (EFBIG, not its death: SIGXFSZ ignored), and it
    # reports the failure itself, as on a full disk.
    wrapper = tmp_path / "ffmpeg.sh"
    wrapper.write_text(f"#!/bin/sh\ntrap '' XFSZ\nexec '{imageio_ffmpeg.get_ffmpeg_exe()}' \"$@\"\n")
    wrapper.chmod(0o755)
    script = textwrap.dedent(f"""
        import resource
        from pathlib import Path
        from a2i_core.core.errors import exit_cleanly
        from a2i_core.timeline.video import FrameFolder, encode_film
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
        exit_cleanly(lambda: encode_film(FrameFolder(Path({str(frames.folder)!r}), {COUNT}), {FPS},
                                         Path({str(tmp_path / "sound.wav")!r}), Path({str(tmp_path / "film.mp4")!r})))()
    """)
    env = {**os.environ, "IMAGEIO_FFMPEG_EXE": str(wrapper)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ")  # ffmpeg's own log is not shown
    assert "the film could not be written" in done.stderr and "rerun resumes" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ffmpeg.sh", "frames", "sound.wav"]


def test_a_video_s_sound_becomes_the_film_s_sound(film, tmp_path: Path) -> None:
    mp4, _, wave = film
    frames = _frames(tmp_path / "frames")
    encode_film(frames, FPS, mp4, tmp_path / "again.mp4")  # the sound taken from a video's audio track
    info = film_info(tmp_path / "again.mp4")
    assert info["audio_codec"] == "aac" and abs(info["audio_duration"] - len(wave) / SAMPLE_RATE) <= 1 / FPS
    assert _aligned_correlation(decode(tmp_path / "again.mp4"), wave) > 0.9  # coded twice


def test_sound_sources_without_sound_are_refused_in_one_line(tmp_path: Path) -> None:
    frames = _frames(tmp_path / "frames", count=4)
    encode_film(frames, FPS, None, tmp_path / "silent.mp4")
    (tmp_path / "notes.txt").write_text("not a recording\n")
    cases = {tmp_path / "silent.mp4": "no audio stream", tmp_path / "notes.txt": "ffmpeg can read",
             tmp_path / "absent.wav": "no such file", tmp_path: "directory"}
    for source, reason in cases.items():
        with pytest.raises(A2IError) as err:
            encode_film(frames, FPS, source, tmp_path / "film.mp4")
        assert reason in _one_line(err) and str(source) in str(err.value)
    assert not (tmp_path / "film.mp4").exists()


def test_names_that_look_like_urls_are_files(tmp_path: Path) -> None:
    frames = _frames(tmp_path / "frames", count=4)
    write_wav(tmp_path / "http:sound.wav", _chirp(0.5))
    encode_film(frames, FPS, tmp_path / "http:sound.wav", tmp_path / "file:film.mp4")
    assert film_info(tmp_path / "file:film.mp4")["audio_codec"] == "aac"


def test_odd_sizes_are_padded_to_even_by_repeating_the_edge(tmp_path: Path) -> None:
    frames = FrameFolder(tmp_path / "frames", 4)
    for i in range(4):
        pixels = np.zeros((47, 63, 3), np.uint8)
        pixels[:, -1] = 255  # a white last column, a red last row
        pixels[-1] = (255, 0, 0)
        frames.save(i, Image.fromarray(pixels))
    encode_film(frames, FPS, None, tmp_path / "odd.mp4")
    info = film_info(tmp_path / "odd.mp4")
    assert (info["width"], info["height"], info["pix_fmt"], info["frames"]) == (64, 48, "yuv420p", 4)
    first = next(film_frames(tmp_path / "odd.mp4"))
    assert first.shape == (48, 64, 3)
    assert first[20, 62:].min() > 200  # the white column, twice: not a black border
    assert first[46:, 20, 0].min() > 200 and first[46:, 20, 1].max() < 60  # the red row, twice


@pytest.mark.parametrize("fps", [0, -8, float("nan"), float("inf"), "fast"])
def test_impossible_frame_rates_are_refused(tmp_path: Path, fps: object) -> None:
    frames = _frames(tmp_path / "frames", count=2)
    with pytest.raises(A2IError, match="frame rate"):
        encode_film(frames, fps, None, tmp_path / "film.mp4")  # type: ignore[arg-type]
    with pytest.raises(A2IError, match="frame rate"):
        preview(frames, tmp_path / "p.webp", fps, 32)  # type: ignore[arg-type]


def test_a_folder_in_the_film_s_place_is_said_in_one_line(tmp_path: Path) -> None:
    frames = _frames(tmp_path / "frames", count=2)
    (tmp_path / "film.mp4").mkdir()
    with pytest.raises(A2IError) as err:
        encode_film(frames, FPS, None, tmp_path / "film.mp4")
    assert str(tmp_path / "film.mp4") in _one_line(err)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_film_info_of_what_is_not_a_film(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    write_wav(tmp_path / "sound.wav", _chirp(0.5))
    for path, reason in {tmp_path / "notes.txt": "not a video", tmp_path / "sound.wav": "not a video",
                         tmp_path / "absent.mp4": "no such file"}.items():
        with pytest.raises(A2IError) as err:
            film_info(path)
        assert reason in _one_line(err) and str(path) in str(err.value)


def test_preview_is_an_animated_webp_of_evenly_spread_frames(tmp_path: Path) -> None:
    frames = _frames(tmp_path / "frames", size=(64, 48))
    preview(frames, tmp_path / "p.webp", FPS, width=32, max_frames=6)
    with Image.open(tmp_path / "p.webp") as image:
        assert image.format == "WEBP" and image.n_frames == 6 and image.size == (32, 24)
        shown, colours = 0, []
        for k in range(image.n_frames):
            image.seek(k)
            colours.append(np.asarray(image.convert("RGB")).mean(axis=(0, 1)))
            shown += image.info["duration"]  # known once the frame is loaded
    assert shown == pytest.approx(1000 * COUNT / FPS, abs=10)  # as long as the film
    picked = np.round(np.linspace(0, COUNT - 1, 6)).astype(int)
    np.testing.assert_allclose(colours, [COLOURS[i] for i in picked], atol=12)  # first to last, evenly


def test_preview_of_a_short_film_has_each_frame_once(tmp_path: Path) -> None:
    frames = _frames(tmp_path / "frames", count=3)
    preview(frames, tmp_path / "p.webp", FPS, width=16)
    with Image.open(tmp_path / "p.webp") as image:
        assert image.n_frames == 3


@pytest.mark.parametrize(("width", "max_frames"), [(0, 10), (20_000, 10), (1.5, 10), (32, 0)])
def test_preview_refuses_impossible_sizes(tmp_path: Path, width: object, max_frames: int) -> None:
    frames = _frames(tmp_path / "frames", count=2)
    with pytest.raises(A2IError):
        preview(frames, tmp_path / "p.webp", FPS, width, max_frames)  # type: ignore[arg-type]
    assert not (tmp_path / "p.webp").exists()


def test_preview_refuses_a_film_with_frames_missing(tmp_path: Path) -> None:
    frames = _frames(tmp_path / "frames", count=4)
    frames.path(1).unlink()
    with pytest.raises(A2IError, match="1 of 4 frames"):
        preview(frames, tmp_path / "p.webp", FPS, 32)
