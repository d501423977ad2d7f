"""Bringing a file in from a URL or a local path, checked against its sha256 where one is known."""

from __future__ import annotations

import hashlib
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from a2i_core.errors import A2IError
from a2i_core.files import atomic_path, cache_root


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_file(location: str, dest: Path, sha256: str | None) -> str:
    """Copy a URL or local file to ``dest`` atomically, check it against a sha256 (or prefix); return the digest."""
    with atomic_path(dest) as tmp:
        if "://" in location:
            try:
                with urllib.request.urlopen(location, timeout=60) as response, open(tmp, "wb") as out:
                    shutil.copyfileobj(response, out, 1 << 20)
            except (urllib.error.URLError, OSError) as err:
                raise A2IError(f"cannot download {location}: {err}") from None
        else:
            if not Path(location).is_file():
                raise A2IError(f"{location}: no such file (a URL, a local path or 'tiny' was expected)")
            shutil.copyfile(location, tmp)
        digest = sha256_file(tmp)
        if sha256 and not digest.startswith(sha256):
            raise A2IError(f"{location}: sha256 {digest[:16]}... does not match the expected {sha256}")
    return digest


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
