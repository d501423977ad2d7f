"""The user's cookies file (``download.cookies``), as yt-dlp may use it during one download run.

yt-dlp reads ``cookiefile`` when a YoutubeDL opens and writes its whole jar back into it when it closes. Handed the
user's own file, every clip rewrote it while other workers were reading it: some clips then failed ("does not look
like a Netscape format cookies file") and the user's file changed. So a run reads the user's file once, into a
private directory, checks it there with yt-dlp's own parser, and gives each worker thread its own copy to rewrite.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import io
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from a2i_core.core.errors import A2IError

log = logging.getLogger(__name__)


class CookieCopies:
    """Each worker thread's own cookies file, copied from the run's snapshot; ``path()`` is None without cookies."""

    def __init__(self, snapshot: Path | None) -> None:
        self.snapshot = snapshot
        self.local = threading.local()

    def path(self) -> str | None:
        if self.snapshot is None:
            return None
        mine = getattr(self.local, "path", None)
        if mine is None:  # a thread's clips run one at a time, so nobody reads this file while yt-dlp rewrites it
            fd, mine = tempfile.mkstemp(prefix="thread-", suffix=".txt", dir=self.snapshot.parent)
            os.close(fd)
            shutil.copyfile(self.snapshot, mine)
            self.local.path = mine
        return mine


@contextlib.contextmanager
def private_cookies(user_file: str | Path | None) -> Iterator[CookieCopies]:
    """Check ``user_file`` and yield copies of it for the workers; A2IError (one line) if it is not usable.

    The copies live in a fresh owner-only temporary directory, outside the workspace, removed when the block ends
    however it ends. The user's file is only read, never written.
    """
    if user_file is None:
        yield CookieCopies(None)
        return
    try:
        private = Path(tempfile.mkdtemp(prefix="a2i-cookies-"))  # mode 0700
    except OSError as err:
        raise A2IError(f"download.cookies: no private directory for a copy of {user_file}: {err}") from None
    try:
        snapshot = private / "cookies.txt"
        count = _snapshot(Path(os.path.expandvars(os.path.expanduser(user_file))), snapshot)  # as yt-dlp does
        log.info("download.cookies: %d cookies from %s (a private copy per worker; the file is not changed)",
                 count, user_file)
        yield CookieCopies(snapshot)
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _snapshot(user_file: Path, snapshot: Path) -> int:
    """Copy ``user_file`` to ``snapshot`` as yt-dlp reads and writes it; return the number of cookies."""
    from yt_dlp.cookies import YoutubeDLCookieJar

    try:
        data = user_file.read_bytes()
    except OSError as err:
        raise A2IError(f"download.cookies: {user_file}: {_lower(err.strerror or str(err))}") from None
    jar, skipped = YoutubeDLCookieJar(str(snapshot)), io.StringIO()
    try:
        snapshot.write_bytes(data)
        # yt-dlp prints each line it skips, cookie value included, to stderr: count them here instead.
        with contextlib.redirect_stderr(skipped):
            jar.load(ignore_discard=True, ignore_expires=True)
    except UnicodeDecodeError:
        raise A2IError(f"download.cookies: {user_file}: not a text file (a Netscape format cookies file "
                       "is expected)") from None
    except (http.cookiejar.LoadError, ValueError):  # its message names our private copy, not the user's file
        raise A2IError(f"download.cookies: {user_file}: not a Netscape format cookies file (the first line must "
                       "be '# Netscape HTTP Cookie File')") from None
    except OSError as err:
        raise A2IError(f"download.cookies: cannot copy {user_file} to {snapshot.parent}: {err}") from None
    if lines := skipped.getvalue().count("skipping cookie file entry"):
        log.warning("download.cookies: %s: %d malformed lines skipped", user_file, lines)
    try:  # saved as yt-dlp writes it, so the workers' YoutubeDLs find nothing left to warn about
        jar.save(ignore_discard=True, ignore_expires=True)
    except OSError as err:
        raise A2IError(f"download.cookies: cannot copy {user_file} to {snapshot.parent}: {err}") from None
    return len(jar)


def _lower(text: str) -> str:
    return text[:1].lower() + text[1:]
