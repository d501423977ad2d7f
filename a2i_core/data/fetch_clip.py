"""Fetchers: one per kind of source, each making one clip a 16 kHz mono WAV or raising ClipFailure.

Synthetic clips are generated, local files (ESC-50, folders) are decoded, YouTube segments (AudioSet, AudioCaps,
VGGSound) are fetched with yt-dlp's ``download_ranges`` and ffmpeg. A failure's status says whether trying again can
help: unavailable (private, removed, terminated, 404) and decode are final; rate-limited (429) and network are not.
A full or read-only disk is no clip's fault: it raises OSError, which stops the whole download.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from a2i_core.core.audio_io import SAMPLE_RATE, AudioError, decode, ffmpeg_dir
from a2i_core.core.errors import A2IError
from a2i_core.core.files import atomic_path
from a2i_core.core.params import DownloadParams
from a2i_core.core.urls import redact_text
from a2i_core.data.sources import synthetic
from a2i_core.data.sources.audioset import YTID

log = logging.getLogger(__name__)
RETRYABLE = {"rate-limited", "network"}
# Failures of our own disk, not of a clip: every later clip would fail the same way.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM})
PROBE_BYTES = 1 << 20


class ClipFailure(A2IError):
    """One clip could not be fetched; ``status`` says whether trying again can help."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


def save_wav(out: Path, wave: np.ndarray) -> None:
    """Write 16-bit PCM WAV atomically; a full disk raises OSError naming ``out``.

    Encoded in memory and written by Python, not by libsndfile, whose failed write says only "System error."
    """
    buffer = io.BytesIO()
    sf.write(buffer, wave, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    try:
        with atomic_path(out) as tmp:
            tmp.write_bytes(buffer.getbuffer())
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(out)) from None


def fetch_synthetic(clip: pd.Series, out: Path, cfg: DownloadParams) -> float:
    spec = synthetic.ClipSpec(label=clip["label"], seed=int(clip["seed"]), seconds=float(clip["seconds"]),
                              gain_db=float(clip["gain_db"]), snr_db=float(clip["snr_db"]))
    wave = synthetic.synthesize(spec)
    save_wav(out, wave)
    return wave.size / SAMPLE_RATE


def fetch_local(clip: pd.Series, out: Path, cfg: DownloadParams) -> float:
    try:
        wave = decode(clip["uri"])
    except AudioError as err:
        raise ClipFailure("decode", str(err)) from None
    save_wav(out, wave)
    return wave.size / SAMPLE_RATE


def classify(message: str) -> str:
    """A yt-dlp / HTTP error message -> manifest status."""
    text = message.lower()
    if "429" in text or "too many requests" in text:
        return "rate-limited"
    if any(k in text for k in ("private video", "video unavailable", "has been removed", "terminated",
                               "not available", "404", "410", "copyright", "sign in to confirm your age")):
        return "unavailable"
    if any(k in text for k in ("timed out", "timeout", "connection", "temporary failure", "network", "500", "502",
                               "503", "504", "reset by peer", "unreachable")):
        return "network"
    return "decode" if "ffmpeg" in text or "invalid data" in text else "unavailable"


class _Silent:
    """yt-dlp's logger: our manifest and log say what happened, not its console output."""

    def debug(self, msg: str) -> None:
        pass

    info = warning = debug

    def error(self, msg: str) -> None:
        log.debug("yt-dlp: %s", redact_text(msg))


def disk_error(message: str, folder: Path) -> OSError | None:
    """The OSError behind a yt-dlp failure writing into ``folder`` when our disk, not the clip, is at fault; None
    when it is the clip."""
    text = message.lower()
    for code in DISK_ERRNOS:
        if os.strerror(code).lower() in text:  # "No space left on device", "Read-only file system", ...
            return OSError(code, os.strerror(code), str(folder))
    if "ffmpeg exited with code" not in text:
        return None
    # ffmpeg wrote the segment; yt-dlp shows only its exit code (its message went to stderr). Killed for a file
    # over the size limit, or unable to write a little more here: the disk. Otherwise: the clip.
    if hasattr(signal, "SIGXFSZ") and text.endswith(f"code -{signal.SIGXFSZ.value}"):
        return OSError(errno.EFBIG, os.strerror(errno.EFBIG), str(folder))
    try:
        with tempfile.TemporaryFile(dir=folder) as probe:
            probe.write(bytes(PROBE_BYTES))
            probe.flush()
    except OSError as err:
        if err.errno in DISK_ERRNOS:
            return OSError(err.errno, err.strerror, str(folder))
    return None


def youtube_segment(clip: pd.Series) -> tuple[str, float, float]:
    """A YouTube clip's (id, start, end), checked: never let a bad id reach a URL or ffmpeg."""
    ytid, start, end = str(clip["ytid"]), float(clip["start"]), float(clip["end"])
    if not YTID.fullmatch(ytid) or not 0 <= start < end:
        raise ClipFailure("unavailable", f"invalid YouTube id or times: {ytid!r} {start}-{end}")
    return ytid, start, end


def ytdl_options(cfg: DownloadParams, **chosen: object) -> dict:
    """yt-dlp's options for one of our fetches: quiet (the manifest says what happened), one try (our queue retries),
    our ffmpeg and cookies, never a playlist; plus what the fetch ``chosen`` (format, ranges, ...)."""
    return {"quiet": True, "no_warnings": True, "noprogress": True, "logger": _Silent(), "retries": 0,
            "socket_timeout": 30, "ffmpeg_location": ffmpeg_dir(), "cookiefile": cfg.cookies, "noplaylist": True,
            **chosen}


def fetch_youtube(clip: pd.Series, out: Path, cfg: DownloadParams) -> float:
    import yt_dlp
    from yt_dlp.utils import DownloadError, download_range_func

    ytid, start, end = youtube_segment(clip)
    with tempfile.TemporaryDirectory(prefix=".dl-", dir=out.parent) as tmp:
        options = ytdl_options(cfg, outtmpl=str(Path(tmp) / "media.%(ext)s"), format="bestaudio/best",
                               download_ranges=download_range_func(None, [(start, end)]))
        try:
            with yt_dlp.YoutubeDL(options) as ydl:
                ydl.download([cfg.url_template.format(ytid=ytid)])
        except DownloadError as err:
            message = redact_text(str(err).removeprefix("ERROR: "))
            if disk := disk_error(message, out.parent):
                raise disk from None
            raise ClipFailure(classify(message), message) from None
        media = [p for p in Path(tmp).iterdir() if p.is_file() and not p.name.endswith(".part")]
        if not media:
            raise ClipFailure("unavailable", "yt-dlp produced no file")
        try:
            wave = decode(media[0])
        except AudioError as err:
            raise ClipFailure("decode", f"segment {start}-{end} s: {err}") from None
    save_wav(out, wave)
    return wave.size / SAMPLE_RATE


Fetcher = Callable[[pd.Series, Path, DownloadParams], float]
# Sources fetched over the network: the global rate limit is for them. Local files and generated clips go at disk
# and CPU speed (at 2 requests/s a folder of 10,000 recordings took 83 minutes).
NETWORK_SOURCES = frozenset({"audioset", "audiocaps", "vggsound"})
FETCHERS: dict[str, Fetcher] = {"synthetic": fetch_synthetic, "esc50": fetch_local, "folder": fetch_local,
                                "audioset": fetch_youtube, "audiocaps": fetch_youtube, "vggsound": fetch_youtube}
