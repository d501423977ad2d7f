import numpy as np
import pytest
import soundfile as sf

from a2i_core.core.audio_io import AudioError, decode, write_wav


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
