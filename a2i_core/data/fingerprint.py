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
    """Every string of a params section (a dataclass, nested) that could name a local file or folder: not a URL.
    Labels and templates are among them; :func:`write_fingerprint` keeps those that exist (or existed)."""
    found: list[str] = []

    def visit(value: object) -> None:
        if dataclasses.is_dataclass(value):
            for f in dataclasses.fields(value):
                visit(getattr(value, f.name))
        elif isinstance(value, (list, tuple)):
            for item in value:
                visit(item)
        elif isinstance(value, str) and "://" not in value and "\0" not in value:
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
    """Each path's content: a file's sha256, or a folder's {relative path: sha256}. Every file counts, hidden ones
    too (the readers' ``rglob`` sees them); links to files are followed (DVC's symlink cache), links to folders are
    not, as ``rglob`` does not. A file that cannot be read is recorded as such: the reader reports it."""
    result: dict[str, dict[str, str] | str] = {}
    started, last, hashed = time.monotonic(), time.monotonic(), 0
    for path in paths:
        if os.path.isfile(path):
            result[path] = _digest(path, digests)
            continue
        files: dict[str, str] = {}
        for folder, dirs, names in os.walk(path):
            dirs.sort()
            for name in sorted(names):
                full = os.path.join(folder, name)
                if not os.path.isfile(full):  # a dangling link or a special file: the reader reports it
                    continue
                files[os.path.relpath(full, path)] = _digest(full, digests)
                hashed += 1
                if time.monotonic() - last > PROGRESS_SECONDS:
                    last = time.monotonic()
                    log.info("fingerprint of %s: %d files so far (%.0f files/s)", path, hashed,
                             hashed / (last - started))
        result[path] = files
    return result


def _digest(path: str, digests: Digests) -> str:
    try:
        return digests.of(path)
    except OSError as err:  # unreadable, or gone during the walk: a change all the same, and the reader says why
        return f"unreadable: {err.strerror or type(err).__name__}"


def write_fingerprint(out: str | Path, names: list[str], digests: Digests) -> None:
    """``out`` holds the fingerprint of those of ``names`` that exist; its bytes are the same whenever the files are.

    A name the previous fingerprint held that is not on this machine (a teammate who pulled the outputs but not the
    recordings) keeps its previous entry, with a warning: its readers are taken as unchanged, so experiments on the
    pulled outputs still run.
    """
    out = Path(out)
    try:
        previous = json.loads(out.read_text())
    except (OSError, ValueError):
        previous = {}
    here = [name for name in names if os.path.exists(name)]
    found = fingerprint(here, digests)
    for name in names:
        if name not in found and name in previous:
            log.warning("%s: not on this machine: its fingerprint from the last run is kept, so the stages that read "
                        "it are taken as unchanged", name)
            found[name] = previous[name]
    files = sum(len(v) if isinstance(v, dict) else 1 for v in found.values())
    log.info("%s: %d local paths, %d files", out, len(found), files)
    write_json(out, dict(sorted(found.items())))
