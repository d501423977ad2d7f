"""Writing files: an output appears whole under its final name, or not at all; and where a2i caches files."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import logging
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from a2i_core.core.errors import A2IError, describe, first_line

log = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        tmp_path.chmod(0o666 & ~_UMASK)  # mkstemp makes owner-only files; outputs get the usual permissions
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        tmp.chmod(0o777 & ~_UMASK)  # mkdtemp makes an owner-only directory
        replace_dir(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(src: str | Path, dest: str | Path) -> None:
    """Put the finished directory ``src`` in place of ``dest``, then delete the old one.

    On Linux the two are swapped in one step (renameat2 RENAME_EXCHANGE), so a reader never finds ``dest``
    missing; elsewhere the old one is renamed aside just before the new one is renamed in.
    """
    src, dest = Path(src), Path(dest)
    if not dest.exists():
        os.replace(src, dest)
        return
    if _exchange(src, dest):  # src now holds the old directory
        shutil.rmtree(src)
        return
    aside = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    os.replace(dest, aside)
    os.replace(src, dest)
    shutil.rmtree(aside)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths; False where the system cannot (not Linux, old kernel or libc, some filesystems)."""
    if sys.platform != "linux":
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def dir_identity(path: str | Path) -> tuple[int, int, int] | None:
    """What tells one directory at ``path`` from the next one put there: a reader that sees it change while reading
    several files read a mix of two versions and must read again."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino, st.st_ctime_ns  # ctime too: a freed inode number can come back


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data: object) -> None:
    """``data`` as strict JSON: a float that is not finite (a diverged loss, a cosine of a zero vector) is written as
    null with a warning naming its key, since Python's bare ``NaN`` is not JSON and breaks every reader of metrics
    (``dvc metrics``, ``jq``, a browser)."""
    write_text(path, json.dumps(_finite_or_null(data, path, ""), indent=2, sort_keys=True, allow_nan=False) + "\n")


def _finite_or_null(value: object, path: str | Path, key: str) -> object:
    if isinstance(value, dict):
        return {k: _finite_or_null(v, path, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v, path, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        log.warning("%s: %s is %s: written as null", path, key or "the value", value)
        return None
    return value


def read_json(path: str | Path) -> Any:
    """A JSON file's content, or one line saying why it is not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError, RecursionError) as err:  # ValueError: bad JSON or bad UTF-8
        raise A2IError(f"{path}: not valid JSON ({first_line(err)})") from None


def cache_root() -> Path:
    """a2i's per-user cache (downloaded metadata, the ffmpeg link yt-dlp needs), under XDG_CACHE_HOME."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "a2i"


def _read_umask() -> int:
    # Read once: os.umask can only be read by setting it, which would race with other threads' file creation.
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def project_root() -> Path:
    """The source checkout a2i runs from: its dvc.yaml, stages/ and params.yaml."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "dvc.yaml").is_file():
        raise A2IError(f"{root}: no dvc.yaml here; run from a source checkout of a2i (pip install -e .)")
    return root


@contextlib.contextmanager
def hold_folder(folder: str | Path, lock_name: str, busy: str) -> Iterator[None]:
    """Hold ``folder`` for one writer: a second holder, in this process or another, is refused at once with one line
    (``busy`` says what is going on). The lock goes with the open file, so it is released on exit and when the
    process dies."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / lock_name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as err:
        raise A2IError(f"{folder}: cannot write there ({describe(err)})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise A2IError(f"{folder}: {busy}") from None
        yield
    finally:
        os.close(fd)
