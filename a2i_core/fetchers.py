"""Fetchers: one per kind of source, each making one clip a 16 kHz mono WAV or raising ClipFailure.

Synthetic clips are generated, local files (ESC-50, folders) are decoded, YouTube segments (AudioSet, AudioCaps)
are fetched with yt-dlp's ``download_ranges`` and ffmpeg. A failure's status says whether trying again can help:
unavailable (private, removed, terminated, 404) and decode are final; rate-limited (429) and network are not.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from a2i_core.audio import SAMPLE_RATE, AudioError, decode, ffmpeg_dir, write_wav
from a2i_core.errors import A2IError
from a2i_core.params import DownloadParams
from a2i_core.sources import synthetic
from a2i_core.sources.audioset import YTID

log = logging.getLogger(__name__)
RETRYABLE = {"rate-limited", "network"}


class ClipFailure(A2IError):
    """One clip could not be fetched; ``status`` says whether trying again can help."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


def fetch_synthetic(clip: pd.Series, out: Path, cfg: DownloadParams) -> float:
    spec = synthetic.ClipSpec(label=clip["label"], seed=int(clip["seed"]), seconds=float(clip["seconds"]),
                              gain_db=float(clip["gain_db"]), snr_db=float(clip["snr_db"]))
    wave = synthetic.synthesize(spec)
    write_wav(out, wave)
    return wave.size / SAMPLE_RATE


def fetch_local(clip: pd.Series, out: Path, cfg: DownloadParams) -> float:
    try:
        wave = decode(clip["uri"])
    except AudioError as err:
        raise ClipFailure("decode", str(err)) from None
    write_wav(out, wave)
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
        log.debug("yt-dlp: %s", msg)


def fetch_youtube(clip: pd.Series, out: Path, cfg: DownloadParams) -> float:
    import yt_dlp
    from yt_dlp.utils import DownloadError, download_range_func

    ytid, start, end = str(clip["ytid"]), float(clip["start"]), float(clip["end"])
    if not YTID.match(ytid) or not 0 <= start < end:  # never let a bad id reach a URL or ffmpeg
        raise ClipFailure("unavailable", f"invalid YouTube id or times: {ytid!r} {start}-{end}")
    with tempfile.TemporaryDirectory(prefix=".dl-", dir=out.parent) as tmp:
        options = {
            "outtmpl": str(Path(tmp) / "media.%(ext)s"), "format": "bestaudio/best", "quiet": True,
            "no_warnings": True, "noprogress": True, "logger": _Silent(), "retries": 0, "socket_timeout": 30,
            "download_ranges": download_range_func(None, [(start, end)]), "ffmpeg_location": ffmpeg_dir(),
            "cookiefile": cfg.cookies, "noplaylist": True,
        }
        try:
            with yt_dlp.YoutubeDL(options) as ydl:
                ydl.download([cfg.url_template.format(ytid=ytid)])
        except DownloadError as err:
            message = str(err).removeprefix("ERROR: ")
            raise ClipFailure(classify(message), message) from None
        media = [p for p in Path(tmp).iterdir() if p.is_file() and not p.name.endswith(".part")]
        if not media:
            raise ClipFailure("unavailable", "yt-dlp produced no file")
        try:
            wave = decode(media[0])
        except AudioError as err:
            raise ClipFailure("decode", f"segment {start}-{end} s: {err}") from None
    write_wav(out, wave)
    return wave.size / SAMPLE_RATE


Fetcher = Callable[[pd.Series, Path, DownloadParams], float]
FETCHERS: dict[str, Fetcher] = {"synthetic": fetch_synthetic, "esc50": fetch_local, "folder": fetch_local,
                                "audioset": fetch_youtube, "audiocaps": fetch_youtube}
