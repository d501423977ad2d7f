"""Source metadata from a URL (downloaded once into a cache, sha256 recorded) or a local path (used as is)."""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from a2i_core.errors import A2IError
from a2i_core.files import atomic_path


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "a2i" / "metadata"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def local_copy(location: str) -> Path:
    """A local file for ``location``: the path itself, or the URL's download in the cache (fetched once)."""
    if "://" not in location:
        path = Path(location)
        if not path.exists():
            raise A2IError(f"{location}: no such file or directory")
        return path
    name = location.rstrip("/").rsplit("/", 1)[-1] or "index"
    target = cache_dir() / f"{hashlib.sha256(location.encode()).hexdigest()[:12]}-{name}"
    if not target.exists():
        with atomic_path(target) as tmp:
            try:
                with urllib.request.urlopen(location, timeout=60) as response, open(tmp, "wb") as out:
                    shutil.copyfileobj(response, out, 1 << 20)
            except (urllib.error.URLError, OSError) as err:
                raise A2IError(f"cannot download {location}: {err}") from None
    return target


def extracted(archive: Path) -> Path:
    """A zip archive's contents, extracted once beside it."""
    target = archive.with_suffix(".d")
    if not target.is_dir():
        tmp = archive.with_suffix(".d.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
        os.replace(tmp, target)
    return target
