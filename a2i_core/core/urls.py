"""URLs as they may be shown: credentials and signed query strings never reach a log, an error or a DVC output.

A weights or metadata URL can carry ``user:password@`` or a presigned query (``?X-Amz-Signature=...``); whatever
a2i prints or records about a URL goes through :func:`redact` first.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

HIDDEN = "REDACTED"
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def redact(location: str) -> str:
    """``location`` with its user info and every query value replaced by REDACTED; a local path as it is."""
    if "://" not in location:
        return location
    try:
        parts = urlsplit(location)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:  # not parseable: show only the scheme
        return f"{location.split('://', 1)[0]}://{HIDDEN}"
    netloc = (f"{HIDDEN}@" if "@" in parts.netloc else "") + host + (f":{port}" if port else "")
    query = urlencode([(key, HIDDEN) for key, _ in parse_qsl(parts.query, keep_blank_values=True)], safe=HIDDEN)
    if parts.query and not query:  # a bare token with no key=value form
        query = HIDDEN
    return urlunsplit((parts.scheme, netloc, parts.path, query, HIDDEN if parts.fragment else ""))


def redact_text(text: str) -> str:
    """Every URL inside ``text`` (an error message, say) redacted."""
    def one(match: re.Match) -> str:
        url = match.group(0)
        trail = len(url) - len(url.rstrip(".,:;)]"))  # punctuation after a URL belongs to the sentence
        return redact(url[: len(url) - trail]) + url[len(url) - trail :]

    return _URL.sub(one, text)
