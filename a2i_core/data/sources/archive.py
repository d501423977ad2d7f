"""Archives a source ships as (ESC-50's zip): checked, then extracted once into the cache, keyed by their sha256.

An archive is untrusted input. Every entry is checked before anything is written (names that would land outside
the extraction, links, devices, a file used as a folder), and the caps in data.archives stop a zip bomb: declared
sizes are checked up front and the bytes actually written are counted too. Any refusal names the archive and why,
in one line, and leaves nothing behind.
"""

from __future__ import annotations

import re
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from a2i_core.core.errors import A2IError
from a2i_core.core.fetch_file import sha256_file
from a2i_core.core.files import atomic_dir, cache_root
from a2i_core.core.params import ArchiveParams

BLOCK = 1 << 20
MB = 1 << 20
# zipfile's own complaints about a damaged or unsupported archive.
CORRUPT = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, UnicodeDecodeError)


def extracted(archive: Path, limits: ArchiveParams, shown_as: str | None = None) -> Path:
    """The archive's contents under the cache, extracted once per distinct archive (a changed file is a new one).

    Never written beside the archive: the user's folder is theirs, and the sha256 key means an edited archive is
    never served from an old extraction. Errors name the archive as ``shown_as`` (the URL or path the user gave,
    rather than a download's name in the cache), else by its file name.
    """
    target = cache_root() / "archives" / sha256_file(archive)
    if target.is_dir():
        return target
    shown = shown_as or archive.name
    try:
        with zipfile.ZipFile(archive) as zf:
            entries = checked_entries(shown, zf.infolist(), limits)
            # Checked before atomic_dir: a refused archive does not even create a temp folder.
            with atomic_dir(target) as tmp:
                _copy_entries(shown, zf, entries, tmp, limits)
    except CORRUPT as err:
        raise A2IError(f"{shown}: not a readable zip archive ({err})") from None
    return target


def checked_entries(shown: str, infos: list[zipfile.ZipInfo], limits: ArchiveParams,
                    ) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """Each entry with its relative path; the whole archive is refused at the first entry that cannot be trusted."""
    if len(infos) > limits.max_files:
        raise A2IError(f"{shown}: holds more than {limits.max_files} entries (data.archives.max_files)")
    declared = sum(info.file_size for info in infos if not info.is_dir())
    if declared > limits.max_mb * MB:
        raise _too_big(shown, limits)
    entries = [(info, _entry_path(shown, info)) for info in infos]
    _check_tree(shown, entries)
    return entries


def _entry_path(shown: str, info: zipfile.ZipInfo) -> PurePosixPath:
    name = info.filename
    problem = _name_problem(name) or _type_problem(info)
    if problem:
        raise A2IError(f"{shown}: entry {name[:200]!r} {problem}: archive refused")
    return PurePosixPath(name)


def _name_problem(name: str) -> str | None:
    if name.startswith("/"):
        return "is an absolute path"
    if "\\" in name or re.match(r"[A-Za-z]:", name):
        return "holds a backslash or a drive letter"
    parts = PurePosixPath(name).parts
    if ".." in parts:
        return "climbs out with '..'"
    if not parts or parts == (".",):
        return "has no name"
    return None


def _type_problem(info: zipfile.ZipInfo) -> str | None:
    # Unix zips keep st_mode in the high 16 bits; 0 there (DOS, Windows zips) means a plain file or folder.
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        return "is a symbolic link"
    if kind not in (0, stat.S_IFDIR if info.is_dir() else stat.S_IFREG):
        return "is not a regular file or folder"
    if info.flag_bits & 0x1:
        return "is encrypted"
    return None


def _check_tree(shown: str, entries: list[tuple[zipfile.ZipInfo, PurePosixPath]]) -> None:
    """No path twice, and no entry beneath a file: either would write through or over another entry."""
    files = {path for info, path in entries if not info.is_dir()}
    seen: set[PurePosixPath] = set()
    for info, path in entries:
        if not info.is_dir() and path in seen:
            raise A2IError(f"{shown}: entry {info.filename[:200]!r} appears twice: archive refused")
        seen.add(path)
        parent = next((p for p in path.parents if p in files), None)
        if parent is not None or (info.is_dir() and path in files):
            raise A2IError(f"{shown}: entry {info.filename[:200]!r} lies beneath the file entry "
                           f"{str(parent or path)!r}: archive refused")


def _copy_entries(shown: str, zf: zipfile.ZipFile, entries: list[tuple[zipfile.ZipInfo, PurePosixPath]],
                  dest: Path, limits: ArchiveParams) -> None:
    """Stream each file in blocks, counting what is written: a declared size is the archive's word, not a fact."""
    budget = limits.max_mb * MB
    for info, path in entries:
        out_path = dest.joinpath(*path.parts)
        try:
            if info.is_dir():
                out_path.mkdir(parents=True, exist_ok=True)
                continue
            out_path.parent.mkdir(parents=True, exist_ok=True)
            budget = _copy_file(zf, info, out_path, budget)
        except OSError as err:  # a name too long for this filesystem, a full disk
            raise A2IError(f"{shown}: cannot extract entry {info.filename[:200]!r}: "
                           f"{err.strerror or err}") from None
        if budget < 0:
            raise _too_big(shown, limits)


def _copy_file(zf: zipfile.ZipFile, info: zipfile.ZipInfo, out_path: Path, budget: int) -> int:
    """Copy one entry in blocks; return the budget left, negative (and the copy stopped) once it is spent."""
    # "xb": never open a name twice, never follow anything already there.
    with zf.open(info) as src, open(out_path, "xb") as out:
        while block := src.read(BLOCK):
            budget -= len(block)
            if budget < 0:
                return budget
            out.write(block)
    return budget


def _too_big(shown: str, limits: ArchiveParams) -> A2IError:
    return A2IError(f"{shown}: expands to more than {limits.max_mb} MB (data.archives.max_mb)")
