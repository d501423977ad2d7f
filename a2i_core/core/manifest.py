"""The audio manifest (``manifest.parquet`` beside the clips): one row per clip, ok or why not, and where it is."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pyarrow as pa

from a2i_core.core import shards
from a2i_core.core.errors import A2IError
from a2i_core.core.packs import PackedClip

MANIFEST_KIND = "audio_manifest"
MANIFEST_NAME = "manifest.parquet"
# source_sha256: the local file a clip was decoded from ("" for a download), so a replaced file is taken again.
MANIFEST_COLUMNS = ["clip_id", "status", "reason", "path", "row", "seconds", "source_sha256"]
CLIP_ID = re.compile(r"\A[A-Za-z0-9_-]{1,80}\Z")  # \Z, not $: "$" also matches before a final newline


def check_clip_id(clip_id: str) -> str:
    """Ids come from outside (CSV files); check them before they become a path or a command argument."""
    if not isinstance(clip_id, str) or not CLIP_ID.match(clip_id):
        shown = repr(clip_id) if len(repr(clip_id)) <= 60 else repr(clip_id)[:57] + "..."  # ids can be anything
        raise A2IError(f"invalid clip id {shown}: expected 1 to 80 letters, digits, '_' or '-'")
    return clip_id


def load_manifest(audio_dir: str | Path) -> pd.DataFrame:
    path = Path(audio_dir) / MANIFEST_NAME
    if not path.is_file():
        return pd.DataFrame(columns=MANIFEST_COLUMNS)
    frame = shards.read_table(path, MANIFEST_KIND).to_pandas()
    if "source_sha256" not in frame:  # written before a2i 0.2: its local clips are taken once more
        frame["source_sha256"] = ""
    return frame


def save_manifest(audio_dir: Path, rows: dict[str, dict]) -> None:
    frame = pd.DataFrame([{"row": -1, "source_sha256": "", **rows[k]} for k in sorted(rows)], columns=MANIFEST_COLUMNS)
    table = pa.Table.from_pandas(frame, preserve_index=False, schema=pa.schema([
        ("clip_id", pa.string()), ("status", pa.string()), ("reason", pa.string()),
        ("path", pa.string()), ("row", pa.int32()), ("seconds", pa.float64()), ("source_sha256", pa.string())]))
    shards.write_table(table, audio_dir / MANIFEST_NAME, MANIFEST_KIND)


def clip_sources(audio_dir: str | Path) -> list[tuple[str, Path | PackedClip]]:
    """Every ok clip's audio: its WAV file, or its row in a pack; pack-mates next to each other."""
    audio_dir = Path(audio_dir)
    ok = load_manifest(audio_dir).query("status == 'ok'").sort_values(["path", "row", "clip_id"])
    return [(c, PackedClip(audio_dir / p, int(r)) if r >= 0 else audio_dir / p)
            for c, p, r in zip(ok["clip_id"], ok["path"], ok["row"], strict=True)]
