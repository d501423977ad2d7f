"""What the web app checks before it works on a request: the upload's size, length and sound, the request's
numbers, the login (and how fast it may be retried) and who can reach the server; the one line a visitor sees when
something is refused, and the one line the console gets for a refused file request."""

from __future__ import annotations

import contextlib
import http
import ipaddress
import logging
import math
import re
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from a2i_core.core.audio_io import SAMPLE_RATE, AudioError, decode_stream
from a2i_core.core.errors import A2IError
from a2i_core.serve.generate import SILENCE_RMS
from a2i_core.serve.uploads import posts_to, relay

MB = 1024 * 1024  # Gradio's own unit for max_file_size, so both limits agree to the byte
DURATION_SLACK_S = 0.5  # encoders pad a few frames: a file cut at exactly the limit must still pass
MAX_IMAGES = 4  # per request: each is a full render, and one request holds the only generation slot
UNREADABLE = "That file could not be read as audio."
GONE = "The sound is no longer on the server: upload or record it again."
SILENT = "The sound is silent: there is nothing to hear."
FAILED = "The image could not be made from this sound."
NOT_AN_UPLOAD = "That sound was not uploaded to this page: upload or record it again."
MALFORMED = "The request could not be read."

# A path or message from a client, in a log line: enough to recognise it; a 60 KB URL cannot make a 60 KB line.
MAX_SHOWN_CHARS = 200

# Login retries, per client address. The first failures cost nothing (a person mistyping); from then on each failure
# doubles the wait before the next try, up to a cap, so a password guesser gets about a dozen tries an hour instead
# of a hundred a second, and a person who locked themselves out waits five minutes at most.
LOGIN_FREE_FAILURES = 5
LOGIN_FIRST_WAIT_S = 1.0  # after the LOGIN_FREE_FAILURES-th failure in a row
LOGIN_MAX_WAIT_S = 300.0
LOGIN_FORGET_S = 3600.0  # a client's count starts afresh this long after its last try
MAX_LOGIN_CLIENTS = 10_000  # addresses remembered at once: the table's memory stays bounded whoever knocks
# An IPv6 client is usually given a whole /64: counting single addresses would let it rotate through 2^64 of them.
IPV6_CLIENT_PREFIX = 64
# On the login page: while a client waits, the form can only say "Incorrect credentials", right password or not.
LOGIN_NOTE = (f"After {LOGIN_FREE_FAILURES} failed logins in a row, each further try must wait longer (up to "
              f"{LOGIN_MAX_WAIT_S / 60:g} minutes); a try made sooner is refused, even with the right password.")

log = logging.getLogger(__name__)


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


def shown(text: object) -> str:
    """Client-controlled text for a log line: quoted, escaped (a newline cannot forge a line) and cut short."""
    text = str(text)
    return repr(text[:MAX_SHOWN_CHARS]) + (" (cut)" if len(text) > MAX_SHOWN_CHARS else "")


@dataclass
class _Failures:
    count: int
    last: float  # when the last attempt was let through
    next_try: float  # no attempt is let through before this


class LoginThrottle:
    """Failed logins per client address, and how long each must wait before trying again.

    An attempt counts as a failure from the moment it is let through and is forgiven when it succeeds: a client
    firing many attempts at once gets the free ones through and the rest refused, instead of every one racing past
    the count. ``clock`` is injectable so tests need not wait.
    """

    def __init__(self, free_failures: int = LOGIN_FREE_FAILURES, first_wait_s: float = LOGIN_FIRST_WAIT_S,
                 max_wait_s: float = LOGIN_MAX_WAIT_S, forget_s: float = LOGIN_FORGET_S,
                 max_clients: int = MAX_LOGIN_CLIENTS, clock: Callable[[], float] = time.monotonic) -> None:
        self.free_failures, self.first_wait_s, self.max_wait_s = free_failures, first_wait_s, max_wait_s
        self.forget_s, self.max_clients, self.clock = forget_s, max_clients, clock
        self._clients: OrderedDict[str, _Failures] = OrderedDict()  # least recently tried first

    def wait_after(self, failures: int) -> float:
        """Seconds before the next attempt once ``failures`` attempts in a row have failed."""
        if failures < self.free_failures:
            return 0.0
        # min() on the exponent too: 2 ** 10_000 is an OverflowError as a float
        return min(self.max_wait_s, self.first_wait_s * 2.0 ** min(failures - self.free_failures, 64))

    def admit(self, client: str) -> float:
        """0 when ``client`` may try now (the try is counted as a failure until it succeeds), else the seconds it
        must still wait (nothing is counted)."""
        now = self.clock()
        record = self._clients.get(client)
        if record is not None and now - record.last > self.forget_s:
            record = None
        if record is not None and now < record.next_try:
            return record.next_try - now
        count = (record.count if record is not None else 0) + 1
        self._clients[client] = _Failures(count, now, now + self.wait_after(count))
        self._clients.move_to_end(client)
        while len(self._clients) > self.max_clients:
            self._clients.popitem(last=False)
        return 0.0

    def succeeded(self, client: str) -> None:
        self._clients.pop(client, None)

    def failures(self, client: str) -> int:
        record = self._clients.get(client)
        return record.count if record is not None else 0


def client_key(host: str) -> str:
    """Who a login attempt counts against: its IPv4 address, or its IPv6 address's /64 network."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # not an address (a test client's name, a Unix socket): itself
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/{IPV6_CLIENT_PREFIX}", strict=False))
    return str(address)


class ThrottleLogins:
    """ASGI middleware: Gradio's login route, behind a LoginThrottle. A client that must wait is answered 429 with
    Retry-After, without its password being looked at (a right one too: otherwise the wait would not slow a
    guesser, who would simply learn the answer sooner)."""

    def __init__(self, app, throttle: LoginThrottle) -> None:
        self.app, self.throttle = app, throttle

    async def __call__(self, scope, receive, send) -> None:
        if not posts_to(scope, "login"):
            await self.app(scope, receive, send)
            return
        # uvicorn has already put the real client here when a proxy on this machine forwards the request
        client = client_key(scope["client"][0]) if scope.get("client") else "unknown"
        wait = self.throttle.admit(client)
        if wait > 0:
            from starlette.responses import JSONResponse

            seconds = math.ceil(wait)
            response = JSONResponse({"detail": f"Too many failed logins: try again in {seconds} s."}, status_code=429,
                                    headers={"Retry-After": str(seconds)})
            await response(scope, receive, send)
            return
        status = 0
        try:
            status = await relay(self.app, scope, receive, send)
        finally:
            if status == 200:
                self.throttle.succeeded(client)
            else:
                failures = self.throttle.failures(client)
                wait = self.throttle.wait_after(failures)
                if wait > 0:
                    log.warning("login failed %d times in a row from %s: its next try waits %g s", failures,
                                shown(client), wait)


# Gradio's routes that serve a file by its path: /gradio_api/file=PATH and the older /gradio_api/file/PATH.
FILE_ROUTE = re.compile(r"^/gradio_api/file[=/]")


class LogRefusedFiles:
    """ASGI middleware: one console line for each file request Gradio refuses (a path outside its folders, a file
    gone, a request without login); Gradio itself says nothing, so probing went unseen."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not FILE_ROUTE.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        status = await relay(self.app, scope, receive, send)
        if status >= 400:
            try:
                reason = f"{status} {http.HTTPStatus(status).phrase}"
            except ValueError:
                reason = str(status)
            log.warning("refused a file request (%s): %s", reason, shown(FILE_ROUTE.sub("", scope["path"])))
