"""The download stage's logic: make every candidate clip a 16 kHz mono file, with a manifest row per clip.

Resumable by design: the manifest is rewritten (atomically) as clips finish, a rerun skips clips already
``ok`` whose file is present, and each clip file is written to a temporary name and renamed.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
from tqdm import tqdm

from a2i_core import shards
from a2i_core.audio import SAMPLE_RATE, write_wav
from a2i_core.errors import A2IError
from a2i_core.sources import synthetic

log = logging.getLogger(__name__)

MANIFEST_KIND = "audio_manifest"
MANIFEST_NAME = "manifest.parquet"
CLIP_ID = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
MANIFEST_COLUMNS = ["clip_id", "status", "reason", "path", "seconds"]


def check_clip_id(clip_id: str) -> str:
    """Ids come from outside (CSV files); check them before they become a path or a command argument."""
    if not CLIP_ID.match(clip_id):
        raise A2IError(f"invalid clip id {clip_id!r}: expected letters, digits, '_' or '-'")
    return clip_id


def load_manifest(audio_dir: Path) -> pd.DataFrame:
    path = audio_dir / MANIFEST_NAME
    if not path.is_file():
        return pd.DataFrame(columns=MANIFEST_COLUMNS)
    return shards.read_table(path, MANIFEST_KIND).to_pandas()


def save_manifest(audio_dir: Path, rows: dict[str, dict]) -> None:
    frame = pd.DataFrame([rows[k] for k in sorted(rows)], columns=MANIFEST_COLUMNS)
    table = pa.Table.from_pandas(frame, preserve_index=False, schema=pa.schema([
        ("clip_id", pa.string()), ("status", pa.string()), ("reason", pa.string()),
        ("path", pa.string()), ("seconds", pa.float64())]))
    shards.write_table(table, audio_dir / MANIFEST_NAME, MANIFEST_KIND)


def fetch_synthetic(clip: pd.Series, out: Path) -> float:
    spec = synthetic.ClipSpec(label=clip["label"], seed=int(clip["seed"]), seconds=float(clip["seconds"]),
                              gain_db=float(clip["gain_db"]), snr_db=float(clip["snr_db"]))
    wave = synthetic.synthesize(spec)
    write_wav(out, wave)
    return wave.size / SAMPLE_RATE


FETCHERS: dict[str, Callable[[pd.Series, Path], float]] = {"synthetic": fetch_synthetic}


def download_clips(candidates: pd.DataFrame, audio_dir: str | Path, save_every: int = 200) -> dict[str, int]:
    """Materialise every clip of ``candidates`` under ``audio_dir``; return counts by status."""
    audio_dir = Path(audio_dir)
    audio_dir.mkdir(parents=True, exist_ok=True)
    clips = candidates.drop_duplicates("clip_id").set_index("clip_id", drop=False).sort_index()
    rows = {r["clip_id"]: r for r in load_manifest(audio_dir).to_dict("records")}
    for stale in sorted(audio_dir.glob("*.wav")):
        if stale.stem not in clips.index:
            log.info("%s: no longer a candidate, removed", stale.name)
            stale.unlink()
    done = {cid for cid, r in rows.items() if r["status"] == "ok" and (audio_dir / r["path"]).is_file()}
    todo = [cid for cid in clips.index if cid not in done]
    log.info("%d clips: %d already done, skipped; %d to fetch", len(clips), len(done & set(clips.index)), len(todo))
    start = time.monotonic()
    try:
        for i, clip_id in enumerate(tqdm(todo, desc="download", unit="clip"), start=1):
            clip = clips.loc[check_clip_id(clip_id)]
            name = f"{clip_id}.wav"
            try:
                seconds = FETCHERS[clip["source"]](clip, audio_dir / name)
                rows[clip_id] = {"clip_id": clip_id, "status": "ok", "reason": "", "path": name, "seconds": seconds}
            except A2IError as err:
                rows[clip_id] = {"clip_id": clip_id, "status": "failed", "reason": str(err), "path": "",
                                 "seconds": 0.0}
                log.warning("%s: failed: %s", clip_id, err)
            if i % save_every == 0:
                save_manifest(audio_dir, rows)
    finally:
        # Keep only clips still wanted, and record progress even when interrupted.
        rows = {cid: r for cid, r in rows.items() if cid in clips.index}
        save_manifest(audio_dir, rows)
    counts = pd.Series([r["status"] for r in rows.values()]).value_counts().to_dict()
    log.info("download finished in %.1f s: %s", time.monotonic() - start,
             ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return {str(k): int(v) for k, v in counts.items()}
