"""Bringing a file in from a URL or a local path, checked against its sha256 where one is known.

A URL may carry ``user:password@`` or a presigned query: it is used as given, but whatever is printed or recorded
about it (errors, cache file names, the pin file) goes through :func:`a2i_core.core.urls.redact`.

A URL given without its sha256 is trusted on first use: the digest its first download had is pinned in a pin file
(a git-tracked JSON object, redacted URL -> sha256, whose path the stage's command line gives), said loudly, and
every later download must have that digest exactly. A sha256 given in params always wins; a pin that disagrees with
it is refused, so that nobody is left to guess which of the two was checked.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import logging
import re
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from a2i_core.core.errors import A2IError, first_line
from a2i_core.core.files import atomic_path, cache_root, read_json, write_text
from a2i_core.core.urls import redact, redact_text

SHA256 = re.compile(r"[0-9a-f]{64}")
CACHE_NAME_CHARS = 80  # of the readable part of a cached file's name
log = logging.getLogger(__name__)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_file(location: str, dest: Path, sha256: str | None, pins: Path | None = None, key: str = "params") -> str:
    """Copy a URL or local file to ``dest`` atomically, check it against a sha256 (or, for a local file, a prefix);
    return the digest. A file that does not match never appears at ``dest``.

    A URL needs its full sha256, or ``pins`` (the pin file): then a URL without one must have the digest pinned there
    for it, and one not pinned yet is trusted on first use; the caller pins its digest (:func:`pin`) once it has
    checked the file, so that a file it refuses is never pinned. ``key`` names the sha256's setting in messages."""
    url = "://" in location
    # Whoever can change what a URL serves could match a short prefix (params checks this too).
    if url and sha256 is None and pins is None:
        raise A2IError(f"{redact(location)}: a URL needs its full sha256 (64 lowercase hex digits), got None, and "
                       "nothing here pins it on first use (only the audio_encoder stage of dvc.yaml keeps pins.json)")
    if url and sha256 is not None and not SHA256.fullmatch(sha256):
        raise A2IError(f"{redact(location)}: a URL needs its full sha256 (64 lowercase hex digits), got {sha256!r}")
    pinned = read_pins(pins).get(redact(location)) if url and pins is not None else None
    if sha256 is not None and pinned is not None and pinned != sha256:
        raise A2IError(f"{redact(location)}: {key} says sha256 {sha256[:16]}..., but {pins} pins it to "
                       f"{pinned[:16]}...: if {key} is right, delete the URL's line from {pins}; else correct {key}")
    with atomic_path(dest) as tmp:
        copy_to(location, tmp)
        digest = sha256_file(tmp)
        if sha256 and not digest.startswith(sha256):
            raise A2IError(f"{redact(location)}: sha256 {digest[:16]}... does not match the expected {sha256}")
        if sha256 is None and pinned is not None and digest != pinned:
            raise A2IError(f"{redact(location)}: the file there changed since its first use: sha256 {digest[:16]}... "
                           f"is not the {pinned[:16]}... pinned in {pins}; nothing was replaced (if the new file is "
                           f"the one you want, put its sha256 in {key} or delete the URL's line from {pins})")
    return digest


def read_pins(pins: Path) -> dict[str, str]:
    """The pin file's redacted URL -> sha256 ({} before anything is pinned); a malformed one is refused in one line."""
    if not pins.exists():
        return {}
    found = read_json(pins)
    if not isinstance(found, dict):
        raise A2IError(f"{pins}: expected a JSON object of URL -> sha256, got {type(found).__name__}")
    for location, digest in found.items():
        if not (isinstance(digest, str) and SHA256.fullmatch(digest)):
            raise A2IError(f"{pins}: {location!r}: expected its sha256 (64 lowercase hex digits), got {digest!r}")
    return found


def keep_pin_file(pins: Path) -> None:
    """Create the pin file, empty, where it is missing: a stage declares it as an output, so it must exist after a
    run that pinned nothing."""
    if not pins.exists():
        write_pins(pins, {})


def write_pins(pins: Path, found: dict[str, str]) -> None:
    write_text(pins, json.dumps(found, indent=2, sort_keys=True) + "\n")


def pin(pins: Path, location: str, digest: str, key: str) -> None:
    """Pin ``digest`` for the URL ``location``, fetched with ``key`` (its sha256's setting) null and checked by the
    caller, and say so loudly: from now on :func:`fetch_file` refuses any other file there. A pin is never moved."""
    found = read_pins(pins)
    if "://" not in location or redact(location) in found:
        return
    write_pins(pins, {**found, redact(location): digest})
    log.warning("TRUST ON FIRST USE: %s is now pinned in %s to sha256 %s, its first download's (%s is null), and "
                "every later download must match it: check that digest against one you trust, then commit %s or put "
                "the digest in %s", redact(location), pins, digest, key, pins, key)


def copy_to(location: str, dest: Path) -> None:
    """Write what a URL serves, or a local file's bytes, to ``dest`` (unchecked: callers check or parse it)."""
    if "://" not in location:
        if not Path(location).is_file():
            raise A2IError(f"{location}: no such file (a URL, a local path or 'tiny' was expected)")
        shutil.copyfile(location, dest)
        return
    try:
        with urllib.request.urlopen(_request(location), timeout=60) as response, open(dest, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as err:
        # The reason may quote the URL (an unknown scheme, a redirect): redacted as well.
        reason = redact_text(first_line(err))
        raise A2IError(f"cannot download {redact(location)}: {reason}") from None


def _request(location: str) -> urllib.request.Request:
    """A request for ``location``; ``user:password@`` becomes a Basic auth header (urllib would take it for part of
    the host name)."""
    parts = urlsplit(location)
    if parts.username is None:
        return urllib.request.Request(location)
    request = urllib.request.Request(urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1])))
    credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
    # Unredirected: a redirect to another host must not receive the credentials.
    request.add_unredirected_header("Authorization", f"Basic {base64.b64encode(credentials).decode()}")
    return request


def local_copy(location: str) -> Path:
    """A local file for ``location``: the path itself, or the URL's download in the cache (fetched once)."""
    if "://" not in location:
        path = Path(location)
        if not path.exists():
            raise A2IError(f"{location}: no such file or directory")
        return path
    target = cache_root() / "metadata" / cache_name(location)
    if not target.exists():
        with atomic_path(target) as tmp:
            copy_to(location, tmp)
    return target


def cache_name(url: str) -> str:
    """A cached download's file name: keyed by the whole URL, so distinct URLs stay distinct, but readable only from
    its path's last part (the query may hold a signature, the netloc a password)."""
    try:
        last = urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]
    except ValueError:  # not parseable (a bad IPv6 host): the download will say so
        last = ""
    # The end is kept: it holds the extension that readers look at (.zip).
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", unquote(last))[-CACHE_NAME_CHARS:] or "index"
    return f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{readable}"
