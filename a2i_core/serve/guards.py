"""What the web app checks before it works on a request: the upload's size, length and sound, the request's
numbers, the login and who can reach the server; and the one line a visitor sees when something is refused."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from pathlib import Path

import numpy as np

from a2i_core.core.audio_io import SAMPLE_RATE, AudioError, decode_stream
from a2i_core.core.errors import A2IError
from a2i_core.serve.generate import SILENCE_RMS

MB = 1024 * 1024  # Gradio's own unit for max_file_size, so both limits agree to the byte
DURATION_SLACK_S = 0.5  # encoders pad a few frames: a file cut at exactly the limit must still pass
MAX_IMAGES = 4  # per request: each is a full render, and one request holds the only generation slot
UNREADABLE = "That file could not be read as audio."
GONE = "The sound is no longer on the server: upload or record it again."
SILENT = "The sound is silent: there is nothing to hear."
FAILED = "The image could not be made from this sound."


class SoundRefused(A2IError):
    """An upload the app will not process; the message is the one line the user sees."""


def parse_auth(text: str) -> tuple[str, str]:
    """``USER:PASSWORD`` (the password may contain ':') to a (user, password) pair; A2IError on a bad value."""
    user, sep, password = text.partition(":")
    if not sep or not user.strip() or not password:
        # Never echo the value: it may be a real password with a typo.
        raise A2IError("--auth takes USER:PASSWORD, both non-empty")
    return user.strip(), password


def check_sound(path: str | Path, max_upload_mb: float = 50, max_minutes: float = 10) -> float:
    """Refuse a file over the size or duration limit, unreadable or silent; return its duration in seconds.

    The size is read from the file system; the duration by decoding at most the limit plus a little (ffmpeg
    stops there), so a very long recording costs at most a limit's worth of work and memory. Containers' own
    duration fields are not trusted: they are often missing (streamed recordings) and can lie.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise SoundRefused(GONE) from None
    if size > max_upload_mb * MB:
        raise SoundRefused(f"The file is larger than the {max_upload_mb:g} MB limit.")
    max_seconds = max_minutes * 60
    limit = int((max_seconds + 2 * DURATION_SLACK_S) * SAMPLE_RATE)
    samples, energy = 0, 0.0
    try:
        with contextlib.closing(decode_stream(path)) as chunks:  # closing early stops ffmpeg
            for chunk in chunks:  # (n,) float32
                samples += chunk.size
                energy += float(np.dot(chunk.astype(np.float64), chunk))
                if samples > limit:
                    break
    except AudioError:
        raise SoundRefused(UNREADABLE) from None
    seconds = samples / SAMPLE_RATE
    if seconds > max_seconds + DURATION_SLACK_S:
        raise SoundRefused(f"The sound is longer than the {max_minutes:g}-minute limit.")
    if np.sqrt(energy / samples) < SILENCE_RMS:
        raise SoundRefused(SILENT)
    return seconds


def user_line(err: A2IError, path: Path) -> str:
    """The generator's message about this file, without the server path; a fixed line when it is about more."""
    text = str(err)
    prefix = f"{path}: "
    reason = text[len(prefix):] if text.startswith(prefix) else ""
    if not reason or "/" in reason or "\\" in reason or "\n" in reason:
        return FAILED
    return f"{reason[0].upper()}{reason[1:].rstrip('.')}."


def image_count(value: object) -> int:
    """The Images slider's value, checked again here: an API client can send any number."""
    try:
        count = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        count = 0
    if count != value or not 1 <= count <= MAX_IMAGES:
        raise SoundRefused(f"Images must be a whole number from 1 to {MAX_IMAGES}.")
    return count


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is this machine's loopback (False when it names none)."""
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False
    addresses = {info[4][0].split("%")[0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


def exposure_warning(host: str, auth: tuple[str, str] | None) -> str | None:
    """What to tell the person starting the server about who else can reach it; None on the loopback."""
    if is_loopback(host):
        return None
    if auth is None:
        return (f"LISTENING ON {host} WITHOUT --auth: anyone who can reach this machine can use the app and its "
                "GPU/CPU. Add --auth USER:PASSWORD, or keep the default --host 127.0.0.1")
    return (f"listening on {host}: other machines can reach the login page, and the password crosses the network "
            "unencrypted (plain HTTP) unless a TLS proxy sits in front")
