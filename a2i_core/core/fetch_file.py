"""Bringing a file in from a URL or a local path, checked against its sha256 where one is known.

A URL may carry ``user:password@`` or a presigned query: it is used as given, but whatever is printed or recorded
about it (errors, cache file names) goes through :func:`a2i_core.core.urls.redact`.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import re
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from a2i_core.core.errors import A2IError, first_line
from a2i_core.core.files import atomic_path, cache_root
from a2i_core.core.urls import redact, redact_text

SHA256 = re.compile(r"[0-9a-f]{64}")
CACHE_NAME_CHARS = 80  # of the readable part of a cached file's name


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_file(location: str, dest: Path, sha256: str | None) -> str:
    """Copy a URL or local file to ``dest`` atomically, check it against a sha256 (or, for a local file, a prefix);
    return the digest. A file that does not match never appears at ``dest``."""
    # Whoever can change what a URL serves could match a short prefix (params checks this too).
    if "://" in location and not (sha256 and SHA256.fullmatch(sha256)):
        raise A2IError(f"{redact(location)}: a URL needs its full sha256 (64 lowercase hex digits), got {sha256!r}")
    with atomic_path(dest) as tmp:
        copy_to(location, tmp)
        digest = sha256_file(tmp)
        if sha256 and not digest.startswith(sha256):
            raise A2IError(f"{redact(location)}: sha256 {digest[:16]}... does not match the expected {sha256}")
    return digest


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
