"""What the local files that params name hold, as small JSON files whose bytes change only when a file does.

Params name folders and files outside the project (``data.folder.root``, a local ESC-50 copy, an AudioCaps CSV,
``audio_encoder.release``): DVC tracks such a path's string, not its files. The ``sources`` stage (``always_changed``)
writes one fingerprint per reader of those files, and each reading stage depends on its own, so adding, replacing or
removing a recording reruns exactly the stages that read it, and nothing else. Content digests, not times: a teammate
with the same files gets the same fingerprint. Digests are cached by (path, size, mtime, inode), so an unchanged
folder costs a ``stat`` per file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from pathlib import Path

from a2i_core.core.files import cache_root, write_json

log = logging.getLogger(__name__)
CACHE_NAME = "file_digests.json"
PROGRESS_SECONDS = 10.0  # a first fingerprint of a large folder hashes every byte: say how far it is


def local_paths(section: object) -> list[str]:
    """Every string of a params section (a dataclass, nested) that names an existing local file or folder; URLs
    and other strings (labels, templates) are not files, and a missing path is the reading stage's to report."""
    found: list[str] = []

    def visit(value: object) -> None:
        if dataclasses.is_dataclass(value):
            for f in dataclasses.fields(value):
                visit(getattr(value, f.name))
        elif isinstance(value, (list, tuple)):
            for item in value:
                visit(item)
        elif isinstance(value, str) and "://" not in value and "\0" not in value and os.path.exists(value):
            found.append(value)

    visit(section)
    return sorted(set(found))


class Digests:
    """sha256 of files, remembered by (real path, size, mtime, inode) in a2i's per-user cache."""

    def __init__(self, cache_file: Path | None = None) -> None:
        self.cache_file = cache_file or cache_root() / CACHE_NAME
        try:
            self.known: dict[str, list] = json.loads(self.cache_file.read_text())
        except (OSError, ValueError):  # none yet, or a damaged one: hashing again is always right
            self.known = {}
        self.changed = False

    def of(self, path: str | Path) -> str:
        real = os.path.realpath(path)
        st = os.stat(real)
        stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
        if (hit := self.known.get(real)) and hit[:3] == stamp:
            return hit[3]
        with open(real, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        self.known[real] = [*stamp, digest]
        self.changed = True
        return digest

    def save(self) -> None:
        if self.changed:
            try:
                write_json(self.cache_file, self.known)
            except OSError as err:  # only a cache: the next run hashes again
                log.warning("%s: not saved (%s)", self.cache_file, err.strerror)


def fingerprint(paths: list[str], digests: Digests) -> dict[str, dict[str, str] | str]:
    """Each path's content: a file's sha256, or a folder's {relative path: sha256} (links followed, as DVC's
    symlink cache needs; hidden names skipped, as editors and OSes leave them)."""
    result: dict[str, dict[str, str] | str] = {}
    started, last, hashed = time.monotonic(), time.monotonic(), 0
    for path in paths:
        if os.path.isfile(path):
            result[path] = digests.of(path)
            continue
        files: dict[str, str] = {}
        seen: set[str] = set()  # real folders walked: a link loop is walked once, not forever
        for folder, dirs, names in os.walk(path, followlinks=True):
            seen.add(os.path.realpath(folder))
            dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                             and os.path.realpath(os.path.join(folder, d)) not in seen)
            for name in sorted(n for n in names if not n.startswith(".")):
                full = os.path.join(folder, name)
                if not os.path.isfile(full):  # a dangling link or a special file: the reader reports it
                    continue
                files[os.path.relpath(full, path)] = digests.of(full)
                hashed += 1
                if time.monotonic() - last > PROGRESS_SECONDS:
                    last = time.monotonic()
                    log.info("fingerprint of %s: %d files so far (%.0f files/s)", path, hashed,
                             hashed / (last - started))
        result[path] = files
    return result


def write_fingerprint(out: str | Path, paths: list[str], digests: Digests) -> None:
    """``out`` holds the fingerprint of ``paths``; its bytes are the same whenever the files are."""
    found = fingerprint(paths, digests)
    files = sum(len(v) if isinstance(v, dict) else 1 for v in found.values())
    log.info("%s: %d local paths, %d files", out, len(paths), files)
    write_json(out, found)
