"""Decoding and writing audio. Everything downstream sees 16 kHz mono float32 in [-1, 1].

Decoding goes through ffmpeg (any format it reads, resampled once, here); the binary is the system's
or the one the imageio-ffmpeg wheel carries.
"""

from __future__ import annotations

import functools
import io
import os
import shutil
from pathlib import Path

import ffmpeg
import numpy as np
import soundfile as sf

from a2i_core.errors import A2IError
from a2i_core.files import atomic_path, cache_root
from a2i_core.packs import PackedClip

SAMPLE_RATE = 16_000


class AudioError(A2IError):
    pass


@functools.cache
def ffmpeg_binary() -> str:
    system = shutil.which("ffmpeg")
    if system:
        return system
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@functools.cache
def ffmpeg_dir() -> str:
    """A directory whose ``ffmpeg`` is ffmpeg_binary(): what yt-dlp's ``ffmpeg_location`` wants."""
    binary = Path(ffmpeg_binary())
    if binary.name == "ffmpeg":
        return str(binary.parent)
    link_dir = cache_root() / "ffmpeg-bin"
    link_dir.mkdir(parents=True, exist_ok=True)
    link = link_dir / "ffmpeg"
    if not link.exists() or link.resolve() != binary.resolve():
        tmp = link_dir / f".ffmpeg.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(binary)
        os.replace(tmp, link)
    return str(link_dir)


def _downmix(sample_rate: int) -> str:
    # One resampling step that also averages the channels, as VGGish's reference does: ffmpeg's default
    # stereo-to-mono matrix is (L + R) / sqrt(2), 41 % louder than the mean.
    return f"aresample={sample_rate}:rematrix_maxval=1.0,aformat=sample_fmts=flt:channel_layouts=mono"


def decode(path: str | Path | PackedClip, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode any audio file (or a packed clip) to mono float32 at ``sample_rate``; AudioError if that fails."""
    if isinstance(path, PackedClip):
        try:  # packs hold 16 kHz mono FLAC written by the download stage: no resampling, no ffmpeg
            wave, rate = sf.read(io.BytesIO(path.read()), dtype="float32")
        except (OSError, RuntimeError, IndexError) as err:
            raise AudioError(f"{path.pack} row {path.row}: cannot read packed clip ({err})") from None
        if rate != sample_rate or wave.ndim != 1:
            raise AudioError(f"{path.pack} row {path.row}: packed clip is {rate} Hz, {wave.ndim}-D")
        return wave
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    try:
        raw, _ = (
            ffmpeg.input(str(path))
            .output("pipe:", format="f32le", acodec="pcm_f32le", ac=1, ar=sample_rate, vn=None,
                    af=_downmix(sample_rate))
            .global_args("-nostdin", "-hide_banner", "-loglevel", "error")
            .run(cmd=ffmpeg_binary(), capture_stdout=True, capture_stderr=True)
        )
    except ffmpeg.Error as err:
        lines = err.stderr.decode(errors="replace").strip().splitlines()
        raise AudioError(f"{path}: cannot decode audio ({lines[-1] if lines else 'ffmpeg failed'})") from None
    wave = np.frombuffer(raw, dtype=np.float32)
    if wave.size == 0:
        raise AudioError(f"{path}: no audio samples")
    return wave.copy()


def write_wav(path: str | Path, wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write 16-bit PCM WAV atomically."""
    with atomic_path(path) as tmp:
        sf.write(tmp, wave, sample_rate, subtype="PCM_16", format="WAV")
