"""Uploads the web app keeps only while a request or a page needs them: counted as they arrive, deleted by the last
request that waits for them (or by the request Gradio refuses before it starts), or, for the sound a page keeps for
its next try, when the page replaces it or closes or leaves it unused until Gradio's sweep; never anything outside
Gradio's upload folder; and which files a request names."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path


class UploadCounter:
    """How many uploads of each server file are still waiting for their request.

    Gradio files an upload under the hash of its bytes, so two uploads of the same sound (the same file sent with
    two seeds at once, say) share one path: the first request to finish must not delete what the other still
    needs. ``serve`` counts uploads as they arrive (an ASGI middleware on the upload route); a request deletes its
    file only when it was the last one waiting. A page that keeps its sound after generating takes over its
    request's count and releases it when it lets the sound go, so another page holding the same bytes keeps them.
    Without a counter (``build_app`` alone), each release deletes the file, if in the upload folder, at once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, int] = {}

    def uploaded(self, paths: list[str]) -> None:
        with self._lock:
            for path in paths:
                key = os.path.realpath(path)
                self._waiting[key] = self._waiting.get(key, 0) + 1

    def release(self, path: str | Path) -> bool:
        """One request is done with ``path``: True when it was uploaded and no other upload of it is waiting (delete
        it now). False for a path no upload gave, such as another request's result sent back through the API."""
        key = os.path.realpath(path)
        with self._lock:
            waiting = self._waiting.pop(key, 0)
            if waiting > 1:
                self._waiting[key] = waiting - 1
            return waiting == 1


async def relay(app, scope, receive, send, body: bytearray | None = None) -> int:
    """Let the ASGI ``app`` answer a request; return the status it answered with (0 for none), and collect the
    answer's bytes into ``body`` when given: how a middleware learns what Gradio said."""
    status = 0

    async def capture(message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body" and body is not None:
            body.extend(message.get("body", b""))
        await send(message)

    await app(scope, receive, capture)
    return status


def posts_to(scope: dict, route: str) -> bool:
    """Whether an ASGI request is a POST to Gradio's ``route`` (``upload``, ``login``), under any mount prefix."""
    return scope["type"] == "http" and scope["method"] == "POST" and scope["path"].rstrip("/").endswith(f"/{route}")


class CountUploads:
    """ASGI middleware: feeds the paths Gradio's upload route answers with to an UploadCounter."""

    def __init__(self, app, counter: UploadCounter) -> None:
        self.app, self.counter = app, counter

    async def __call__(self, scope, receive, send) -> None:
        if not posts_to(scope, "upload"):
            await self.app(scope, receive, send)
            return
        body = bytearray()
        if await relay(self.app, scope, receive, send, body) == 200:
            # Anything unexpected only loses the count: that file then stays until the server stops.
            with contextlib.suppress(ValueError, TypeError):
                paths = json.loads(body)
                self.counter.uploaded([p for p in paths if isinstance(p, str)])


def request_files(inputs: object) -> list[object]:
    """The ``path`` of every file a request's inputs name (Gradio's FileData: a dict with a "path"), as the client
    sent it: any JSON value, not necessarily a string."""
    found, stack = [], [inputs]
    while stack:  # not recursive: a client chooses how deep its JSON nests
        value = stack.pop()
        if isinstance(value, dict):
            if "path" in value:
                found.append(value["path"])
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return found


def within(path: object, root: Path) -> Path | None:
    """``path`` resolved (links, '..'), when it is a string naming something inside ``root``; else None."""
    if not isinstance(path, str):
        return None
    try:
        resolved = Path(path).resolve()
        return resolved if root.resolve() in resolved.parents else None
    except (OSError, ValueError, RuntimeError):  # a NUL byte, a name too long, a link loop
        return None


def delete_upload(path: Path, upload_root: Path) -> None:
    """Remove an uploaded file and its per-upload folder; never anything outside Gradio's upload folder."""
    resolved = within(str(path), upload_root)
    if resolved is None:
        return
    with contextlib.suppress(OSError):
        root = upload_root.resolve()
        resolved.unlink(missing_ok=True)
        parent = resolved.parent
        while parent != root:
            parent.rmdir()  # OSError (and stop) when it still holds something
            parent = parent.parent


def renew(path: Path, upload_root: Path) -> None:
    """Start an upload's age afresh for Gradio's sweep, which deletes files by their inode change time: a sound a
    page keeps using is swept only once it has gone unused that long. Never anything outside the upload folder."""
    resolved = within(str(path), upload_root)
    if resolved is not None:
        with contextlib.suppress(OSError):  # gone already: the next request says so
            os.utime(resolved)
