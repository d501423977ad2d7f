"""Long recordings: decoded as a stream and embedded a window at a time, with the same numbers as whole-file."""

import os
import subprocess

import numpy as np
import pytest
import torch

from a2i_core.audio.encoder import load_audio_encoder
from a2i_core.audio.features import AUDIO_KIND, embed_clips, embed_path, embed_waves
from a2i_core.audio.vggish import EXAMPLE_FRAMES, HOP, MIN_SAMPLES, LogMelFrontend
from a2i_core.core import shards
from a2i_core.core.audio_io import AudioError, decode, decode_stream, ffmpeg_binary, write_wav

CPU = torch.device("cpu")
STEP = EXAMPLE_FRAMES * HOP  # 15360 samples between examples


@pytest.fixture(scope="module")
def vggish(tiny_vggish_dir):
    encoder = load_audio_encoder(tiny_vggish_dir, postprocess=False)
    return encoder, encoder.place(CPU)


def _signal(samples: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 16000
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(samples)).astype(np.float32)


def _ffmpeg_children() -> list[int]:
    """Live (not zombie) children of this process whose executable is ffmpeg."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        return [c.pid for c in psutil.Process().children(recursive=True)
                if "ffmpeg" in c.name() and c.status() != psutil.STATUS_ZOMBIE]
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == me and "ffmpeg" in os.readlink(f"/proc/{entry}/exe"):
                found.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return found


def _children_of_this_process() -> set[int]:
    """Every child pid, zombies included: a reaped child is gone from here."""
    me, pids = os.getpid(), set()
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == me:
                    pids.add(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return pids


@pytest.mark.parametrize("samples", [
    4000,  # shorter than one example: padded by repetition
    MIN_SAMPLES,  # exactly one example
    MIN_SAMPLES + 7,  # one example and a few samples that make none
    STEP + MIN_SAMPLES - 1,  # one sample short of a second example
    5 * STEP + MIN_SAMPLES + 3000,  # six examples, over several windows
])
@pytest.mark.parametrize("window_seconds", [0.01, 2.0, 60.0])
def test_embed_path_equals_the_whole_file(tmp_path, vggish, samples, window_seconds):
    encoder, frontend = vggish
    path = tmp_path / "a.wav"
    write_wav(path, _signal(samples))
    wave = decode(path)
    whole = embed_waves(encoder, frontend, [wave], batch_size=4, device=CPU)[0]
    frames, n, rms = embed_path(encoder, frontend, path, batch_size=4, device=CPU, window_seconds=window_seconds)
    assert frames.shape == whole.shape == (LogMelFrontend.num_examples(samples), 128)
    assert n == samples == wave.size
    assert rms == pytest.approx(float(np.sqrt(np.mean(wave.astype(np.float64) ** 2))), rel=1e-9)
    np.testing.assert_allclose(frames, whole, atol=1e-5, rtol=0)


def test_a_three_minute_flac_in_ten_second_windows_equals_the_whole_file(tmp_path, vggish):
    encoder, frontend = vggish
    wav, flac = tmp_path / "long.wav", tmp_path / "long.flac"
    write_wav(wav, _signal(180 * 16000 + 1234, seed=3))
    subprocess.run([ffmpeg_binary(), "-nostdin", "-loglevel", "error", "-i", str(wav), str(flac)], check=True)
    wave = decode(flac)
    whole = embed_waves(encoder, frontend, [wave], batch_size=16, device=CPU)[0]
    frames, n, _ = embed_path(encoder, frontend, flac, batch_size=16, device=CPU, window_seconds=10.0)
    assert n == wave.size and frames.shape == whole.shape == (187, 128)
    np.testing.assert_allclose(frames, whole, atol=1e-5, rtol=0)


def test_decode_stream_chunks_join_to_decode(tmp_path):
    path = tmp_path / "a.wav"
    write_wav(path, _signal(50_000))
    chunks = list(decode_stream(path, chunk_samples=16_000))
    assert [c.size for c in chunks] == [16_000, 16_000, 16_000, 2_000]
    assert all(c.dtype == np.float32 and c.flags.writeable for c in chunks)
    np.testing.assert_array_equal(np.concatenate(chunks), decode(path))


def test_decode_stream_errors_are_one_line_naming_the_file(tmp_path, vggish):
    bad = tmp_path / "corrupt.flac"
    bad.write_bytes(b"fLaC" + bytes(range(256)) * 8)
    with pytest.raises(AudioError, match="corrupt.flac: cannot decode audio") as err:
        list(decode_stream(bad))
    assert "\n" not in str(err.value)
    with pytest.raises(AudioError, match="nope.wav: no such file"):
        decode_stream(tmp_path / "nope.wav")
    empty = tmp_path / "empty.wav"
    write_wav(empty, np.zeros(0, np.float32))
    with pytest.raises(AudioError, match="empty.wav: no audio samples"):
        list(decode_stream(empty))
    with pytest.raises(AudioError, match="empty.wav: no audio samples"):
        embed_path(*vggish, empty, 4, CPU)  # fails in decoding, before any model work


def test_stopping_early_leaves_no_ffmpeg_behind(tmp_path):
    path = tmp_path / "long.wav"
    write_wav(path, _signal(120 * 16000))  # far more than the pipe holds: ffmpeg is blocked writing when we stop
    before = _children_of_this_process()

    stream = decode_stream(path, chunk_samples=1000)
    next(stream)
    assert _ffmpeg_children(), "ffmpeg should be running while the stream is open"
    stream.close()
    assert not _ffmpeg_children() and _children_of_this_process() <= before  # killed and reaped

    for _ in decode_stream(path, chunk_samples=1000):
        break  # the loop drops the generator: closed, ffmpeg killed
    assert not _ffmpeg_children() and _children_of_this_process() <= before


def test_embed_clips_streams_long_files_in_order(tmp_path, tiny_vggish_dir):
    encoder = load_audio_encoder(tiny_vggish_dir, postprocess=False)
    frontend = LogMelFrontend()
    lengths = [20_000, 70_000, 16_000, 200_000, 30_000]  # two files longer than a 2 s window
    clips = []
    for i, n in enumerate(lengths):
        write_wav(tmp_path / f"c{i}.wav", _signal(n, seed=i))
        clips.append((f"c{i}", tmp_path / f"c{i}.wav"))
    (tmp_path / "broken.wav").write_bytes(b"not audio")
    clips.insert(2, ("broken", tmp_path / "broken.wav"))
    stats = embed_clips(encoder, clips, tmp_path / "features", batch_size=4, shard_rows=3, device=CPU,
                        window_seconds=2.0)
    assert stats["clips"] == 5 and stats["skipped"] == 1
    table = shards.read_shards(tmp_path / "features", AUDIO_KIND)
    assert table["clip_id"].to_pylist() == ["c0", "c1", "c2", "c3", "c4"]
    expected = embed_waves(encoder, frontend, [decode(p) for c, p in clips if c != "broken"], 4, CPU)
    for got, want in zip(table["frames"].to_pylist(), expected, strict=True):
        np.testing.assert_allclose(np.array(got, np.float32), want, atol=1e-5, rtol=0)
