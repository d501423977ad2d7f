"""Source metadata from a URL (downloaded once into a cache, sha256 recorded) or a local path (used as is)."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

from a2i_core.errors import A2IError
from a2i_core.files import atomic_dir, cache_root, fetch_file


def local_copy(location: str) -> Path:
    """A local file for ``location``: the path itself, or the URL's download in the cache (fetched once)."""
    if "://" not in location:
        path = Path(location)
        if not path.exists():
            raise A2IError(f"{location}: no such file or directory")
        return path
    name = location.rstrip("/").rsplit("/", 1)[-1] or "index"
    target = cache_root() / "metadata" / f"{hashlib.sha256(location.encode()).hexdigest()[:12]}-{name}"
    if not target.exists():
        fetch_file(location, target, None)
    return target


def extracted(archive: Path) -> Path:
    """A zip archive's contents, extracted once beside it."""
    target = archive.with_suffix(".d")
    if not target.is_dir():
        with atomic_dir(target) as tmp, zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
    return target
