"""Decoding and writing audio. Everything downstream sees 16 kHz mono float32 in [-1, 1].

Decoding goes through ffmpeg (any format it reads, resampled once, here); the binary is the system's
or the one the imageio-ffmpeg wheel carries.
"""

from __future__ import annotations

import errno
import functools
import io
import os
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import ffmpeg
import numpy as np
import soundfile as sf

from a2i_core.core.errors import A2IError
from a2i_core.core.files import atomic_path, cache_root
from a2i_core.core.packs import PackedClip

SAMPLE_RATE = 16_000
# What a folder of recordings is searched for (a folder source, `a2i generate DIR`): formats ffmpeg decodes.
AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".wma", ".aiff", ".aif", ".webm",
                  ".mp4", ".mkv", ".caf", ".au"}
STREAM_CHUNK_SAMPLES = 1 << 16  # 4.1 s at 16 kHz, 256 KiB: few reads, little memory
# ffmpeg-python hashes its arguments as UTF-8, and a file name that is not UTF-8 (its bytes held as surrogates) made
# that a traceback ending the whole run: the name takes this placeholder's place once the command is built.
INPUT_SLOT = "a2i:input"
PROBE_TIMEOUT_S = 20  # reading a header takes milliseconds; a stuck probe must not hold up what it reports on
# What a file is, when it is not a regular one: said instead of "no such file" (a FIFO, /dev/zero and a link loop
# all were), so that the user knows what they named.
FILE_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a named pipe", stat.S_IFCHR: "a character device",
              stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}
# A layout's name as ffmpeg prints it after the sample rate on its first audio stream's line ("16000 Hz, 5.1(side),
# flt"). Anchored at a line's start: metadata lines are indented and never begin with "Stream #".
AUDIO_STREAM = re.compile(rb"^\s*Stream #\d+:\d+[^\n]*?: Audio: [^\n]*?, \d+ Hz, ([^,\n]+)", re.MULTILINE)


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


def not_a_file(path: str | Path) -> str | None:
    """Why ``path`` cannot be read as an audio file, judged from its metadata only, or None for a regular file we
    may read. Never opened here: opening a named pipe blocks until something writes into it, and a device
    (/dev/zero) never ends."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "is a symbolic link loop"
        if err.errno == errno.EACCES:
            return "permission denied (a folder on its path cannot be searched)"
        if err.errno == errno.ENOENT and path.is_symlink():
            try:
                return f"is a symbolic link to {os.readlink(path)}, which does not exist"
            except OSError:
                pass
        if err.errno == errno.ENOTDIR:
            return "no such file or directory (a part of its path is a file, not a folder)"
        return "no such file or directory" if err.errno == errno.ENOENT else (err.strerror or str(err)).lower()
    if stat.S_ISREG(mode):
        return None if os.access(path, os.R_OK) else "permission denied (the file cannot be read)"
    return f"is {FILE_KINDS.get(stat.S_IFMT(mode), 'not a regular file')}, not a file"


def claimed_seconds(path: str | Path) -> float | None:
    """The duration a file's header claims, as ffmpeg reads it (estimated from the bitrate where the format keeps
    none), or None where it claims nothing. A claim only, for progress lines: it can be missing or a lie."""
    argv = [ffmpeg_binary(), "-nostdin", "-hide_banner", "-protocol_whitelist", "file", "-i", _ffmpeg_name(path)]
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None
    found = re.search(rb"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", done.stderr)  # no output: ffmpeg exits 1 after it
    if found is None:
        return None
    hours, minutes, seconds = (float(g) for g in found.groups())
    return hours * 3600 + minutes * 60 + seconds


def channel_layout(path: str | Path) -> tuple[int, str] | None:
    """The number of channels and ffmpeg's name of the layout ("mono", "stereo", "5.1(side)", "6 channels") of a
    file's first audio stream, as its header says; None where it has no audio stream, ffmpeg cannot read it, or
    the name tells no count (an ambisonic layout), or it is not a regular file (``not_a_file``: never opened). A
    claim from the header, read as ``claimed_seconds`` reads one."""
    if not_a_file(path):
        return None
    argv = [ffmpeg_binary(), "-nostdin", "-hide_banner", "-protocol_whitelist", "file", "-i", _ffmpeg_name(path)]
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None
    found = AUDIO_STREAM.search(done.stderr)
    if found is None:
        return None
    name = found.group(1).decode(errors="replace").strip()
    count = layout_channels(name)
    return None if count is None else (count, name)


def layout_channels(name: str) -> int | None:
    """How many channels a layout ffmpeg names holds: a standard one ("5.1(side)"), "6 channels", or a custom order
    "3 channels (FL+FR+LFE)"; None for a name that tells no count."""
    counted = re.fullmatch(r"(\d+) channels?(?: \(.*\))?", name)
    if counted:
        return int(counted.group(1))
    return _standard_layouts().get(name)


@functools.cache
def _standard_layouts() -> dict[str, int]:
    # From the binary itself (`ffmpeg -layouts`): its list grows with its version (22.2, 9.1.6, binaural...).
    done = subprocess.run([ffmpeg_binary(), "-nostdin", "-hide_banner", "-layouts"], stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=PROBE_TIMEOUT_S)
    text = done.stdout.decode(errors="replace")
    table = text.split("Standard channel layouts:", 1)[-1]
    found = re.findall(r"^(\S+)\s+([A-Z0-9]+(?:\+[A-Z0-9]+)*)\s*$", table, re.MULTILINE)
    return {name: len(parts.split("+")) for name, parts in found if name != "NAME"}


def _ffmpeg_name(path: str | Path) -> str:
    # Absolute: ffmpeg reads a name such as "a:b.wav" as the URL of a protocol "a"; "/..." is always a file.
    return str(Path(path).absolute())


def _downmix(sample_rate: int) -> str:
    # One resampling step that also averages the channels, as VGGish's reference does: ffmpeg's default
    # stereo-to-mono matrix is (L + R) / sqrt(2), 41 % louder than the mean. An encoder at another rate (CLAP: 48
    # kHz) gets the 16 kHz audio resampled again: the pipeline stores its clips at 16 kHz, so a user's file must
    # lose the same band above 8 kHz as the training clips did.
    chain = f"aresample={SAMPLE_RATE}:rematrix_maxval=1.0,aformat=sample_fmts=flt:channel_layouts=mono"
    return chain if sample_rate == SAMPLE_RATE else f"{chain},{_upsample(sample_rate)}"


def _one_channel(channel: int, channels: int | None, sample_rate: int) -> str:
    # Channel ``channel`` of the file's stereo form, then the same resampling as the mono mix (its mono aformat is
    # then a no-op). A mono file's two channels are the file itself: swresample's mono -> stereo upmix would give
    # each 1/sqrt(2) of it, 3 dB quieter than its mono mix. Two channels are taken as they are, whatever their
    # layout's name (stereo, "2 channels", downmix). More are first matrixed to stereo by swresample's standard
    # matrix (what -ac 2 uses: L = FL + C/sqrt(2) + SL/sqrt(2), LFE dropped), its rows scaled to sum to 1 as the
    # mono mix's are (rematrix_maxval=1): then the mono mix is exactly the mean of the two channels, as for a
    # stereo file. An unknown count (the header said nothing readable) takes that general path.
    if channels == 1:
        return _downmix(sample_rate)
    pick = f"pan=mono|c0=c{channel}"
    if channels == 2:
        return f"{pick},{_downmix(sample_rate)}"
    stereo = "aresample=rematrix_maxval=1.0,aformat=sample_fmts=flt:channel_layouts=stereo"
    return f"{stereo},{pick},{_downmix(sample_rate)}"


def _upsample(sample_rate: int) -> str:
    return f"aresample={sample_rate},aformat=sample_fmts=flt"


def resample(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """A 16 kHz mono waveform at ``sample_rate``, by the same ffmpeg step ``decode`` takes after reaching 16 kHz."""
    if sample_rate == SAMPLE_RATE:
        return wave
    argv = (ffmpeg.input("pipe:", format="f32le", ar=SAMPLE_RATE, ac=1)
            .output("pipe:", format="f32le", acodec="pcm_f32le", af=_upsample(sample_rate))
            .global_args("-hide_banner", "-loglevel", "error").compile(cmd=ffmpeg_binary()))
    done = subprocess.run(argv, input=np.ascontiguousarray(wave, np.float32).tobytes(), capture_output=True)
    if done.returncode != 0:
        raise AudioError(f"cannot resample to {sample_rate} Hz ({done.stderr.decode(errors='replace').strip()})")
    return np.frombuffer(done.stdout, np.float32).copy()


def decode(path: str | Path | PackedClip, sample_rate: int = SAMPLE_RATE, channel: int | None = None) -> np.ndarray:
    """Decode any audio file (or a packed clip) to mono float32 at ``sample_rate``; AudioError if that fails.
    With ``channel`` (0 left, 1 right), that channel of the file's stereo form instead (``decode_stream``); a packed
    clip is mono, so either channel is the clip itself."""
    _check_channel(channel)
    if isinstance(path, PackedClip):
        import pyarrow as pa  # loaded already: PackedClip reads with it

        try:  # packs hold 16 kHz mono FLAC written by the download stage: no resampling, no ffmpeg
            wave, rate = sf.read(io.BytesIO(path.read()), dtype="float32")
        except (OSError, RuntimeError, IndexError, ValueError, pa.ArrowException) as err:  # a damaged pack too
            raise AudioError(f"{path.pack} row {path.row}: cannot read packed clip ({err})") from None
        if rate != SAMPLE_RATE or wave.ndim != 1:
            raise AudioError(f"{path.pack} row {path.row}: packed clip is {rate} Hz, {wave.ndim}-D")
        return resample(wave, sample_rate)
    # one tight array, as before streaming existed
    return np.concatenate(list(decode_stream(path, sample_rate, channel=channel)))


def _check_channel(channel: int | None) -> None:
    if channel is not None and (isinstance(channel, bool) or channel not in (0, 1)):
        raise ValueError(f"channel must be 0 (left), 1 (right) or None (the mono mix), got {channel!r}")


def decode_stream(path: str | Path, sample_rate: int = SAMPLE_RATE, chunk_samples: int = STREAM_CHUNK_SAMPLES,
                  channel: int | None = None) -> Iterator[np.ndarray]:
    """Decode a file as ``decode`` does, yielding mono float32 chunks of ``chunk_samples`` (the last one shorter).

    One ffmpeg process is read as it decodes, so memory holds one chunk whatever the recording's length. A missing
    file, or one that is not a regular file (``not_a_file``: never opened), raises AudioError here; a file ffmpeg
    cannot decode, or one with no samples, raises it from the iteration (after the chunks decoded before the
    failure). Closing the iterator early (``break``, ``close()``, dropping it) kills and reaps ffmpeg.

    With ``channel`` (0 left, 1 right), that channel of the file's stereo form instead of the mono mix: a mono
    file's two channels are the file itself; more than two are first matrixed to stereo by ffmpeg's standard
    matrix, scaled so that the mono mix is the mean of the two (``_one_channel``). The channel count is read from
    the header first (``channel_layout``).
    """
    path = Path(path)
    _check_channel(channel)
    problem = not_a_file(path)
    if problem:
        raise AudioError(f"{path}: {problem}")
    if chunk_samples < 1:
        raise ValueError(f"chunk_samples must be positive, got {chunk_samples}")
    if channel is None:
        return _stream(path, sample_rate, chunk_samples)
    layout = channel_layout(path)
    return _stream(path, sample_rate, chunk_samples, _one_channel(channel, layout and layout[0], sample_rate))


def _stream(path: Path, sample_rate: int, chunk_samples: int, af: str | None = None) -> Iterator[np.ndarray]:
    argv = (
        # Local files only, whatever the file turns out to be (a playlist, a concat list): ffmpeg's demuxers already
        # keep nested URLs to their parent's protocols, and this says so for every one of them.
        ffmpeg.input(INPUT_SLOT, protocol_whitelist="file")
        .output("pipe:", format="f32le", acodec="pcm_f32le", ac=1, ar=sample_rate, vn=None,
                af=af or _downmix(sample_rate))
        .global_args("-nostdin", "-hide_banner", "-loglevel", "error")
        .compile(cmd=ffmpeg_binary())
    )
    argv[argv.index(INPUT_SLOT)] = _ffmpeg_name(path)
    chunk_bytes = 4 * chunk_samples
    # stderr goes to a file, not a pipe: nobody reads it until ffmpeg ends, and a full pipe would block ffmpeg
    # while we block on its stdout.
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors)
        assert proc.stdout is not None
        total = 0
        try:
            while True:
                buffer = bytearray(chunk_bytes)
                view, filled = memoryview(buffer), 0
                while filled < chunk_bytes:  # a pipe read may return less than asked before EOF
                    got = proc.stdout.readinto(view[filled:])
                    if not got:
                        break
                    filled += got
                view.release()
                usable = filled - filled % 4  # ffmpeg writes whole samples; a stray tail byte is not one
                if usable:
                    total += usable // 4
                    del buffer[usable:]
                    yield np.frombuffer(buffer, dtype=np.float32)  # (samples,), writable: it owns its bytearray
                if filled < chunk_bytes:
                    break
            if proc.wait() != 0:
                # Only the end: a long damaged file can log an error per packet, and the last line says why it stopped.
                errors.seek(max(0, errors.seek(0, os.SEEK_END) - 4096))
                lines = errors.read().decode(errors="replace").strip().splitlines()
                if any("does not contain any stream" in line for line in lines):  # -vn left ffmpeg nothing to take
                    raise AudioError(f"{path}: has no audio stream (a video without sound?)")
                raise AudioError(f"{path}: cannot decode audio ({lines[-1] if lines else 'ffmpeg failed'})")
            if total == 0:
                raise AudioError(f"{path}: no audio samples")
        finally:  # also on GeneratorExit: a consumer that stops early must not leave ffmpeg running or a zombie
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
            proc.wait()


def write_wav(path: str | Path, wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write 16-bit PCM WAV atomically."""
    with atomic_path(path) as tmp:
        sf.write(tmp, wave, sample_rate, subtype="PCM_16", format="WAV")
