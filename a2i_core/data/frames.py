"""Reference frames on disk: the source video's frame at each evaluated clip's midpoint, one PNG per clip, beside a
manifest with the audio's columns (``path`` the PNG's name, ``seconds`` the frame's time in its source).

What reads the frames needs only this module; fetching them is :mod:`a2i_core.data.fetch_frame`'s.
"""

from __future__ import annotations

from pathlib import Path

from a2i_core.core.manifest import load_manifest

SUFFIX = ".png"


def load_frames(frames_dir: Path) -> dict[str, Path]:
    """clip_id -> PNG of every ok frame whose file is there."""
    frames_dir = Path(frames_dir)
    ok = load_manifest(frames_dir).query("status == 'ok'")
    found = {c: frames_dir / p for c, p in zip(ok["clip_id"], ok["path"], strict=True)}
    return {c: p for c, p in sorted(found.items()) if p.is_file()}
