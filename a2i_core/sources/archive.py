"""Archives a source ships as (ESC-50's zip): extracted once, beside the downloaded file."""

from __future__ import annotations

import zipfile
from pathlib import Path

from a2i_core.files import atomic_dir


def extracted(archive: Path) -> Path:
    """A zip archive's contents, extracted once beside it."""
    target = archive.with_suffix(".d")
    if not target.is_dir():
        with atomic_dir(target) as tmp, zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
    return target
