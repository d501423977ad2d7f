"""Audio packs: many clips as FLAC in one Parquet file, one row group per clip.

For millions of clips (AudioSet's unbalanced set), DVC then tracks thousands of files instead of millions, and a
reader takes one clip without reading its whole pack.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

from a2i_core import shards

PACK_KIND = "audio_pack"
PACK_DIR = "packs"


@dataclass(frozen=True)
class PackedClip:
    """One clip inside a pack: row group ``row`` of the Parquet file ``pack`` holds its FLAC bytes."""

    pack: Path
    row: int

    def read(self) -> bytes:
        # Each read opens its own handle (decode threads share packs) but reuses the pack's parsed footer.
        pack = pq.ParquetFile(self.pack, metadata=_pack_metadata(self.pack, self.pack.stat().st_mtime_ns))
        return pack.read_row_group(self.row, columns=["flac"])["flac"][0].as_py()


@functools.lru_cache(maxsize=16)
def _pack_metadata(pack: Path, mtime_ns: int) -> pq.FileMetaData:  # keyed by mtime too: a rewritten pack reparses
    return pq.read_metadata(pack)


def encode_flac(wave: np.ndarray, sample_rate: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, sample_rate, subtype="PCM_16", format="FLAC")
    return buffer.getvalue()


class PackWriter:
    """Gathers finished clips as FLAC and writes them ``size`` at a time into ``packs/pack-NNNNN.parquet``.

    A kill loses at most the clips gathered since the last pack; the rerun fetches them again.
    """

    def __init__(self, audio_dir: Path, size: int) -> None:
        self.dir, self.size, self.buffer = audio_dir / PACK_DIR, size, []
        self.dir.mkdir(exist_ok=True)
        existing = sorted(self.dir.glob("pack-*.parquet"))
        self.next = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0

    def add(self, row: dict, wav: Path) -> list[dict]:
        """Take a finished clip's WAV (removed once read); the manifest rows of a pack when one was written."""
        wave, rate = sf.read(wav, dtype="float32")
        self.buffer.append((row, encode_flac(wave, rate)))
        wav.unlink()
        return self.flush() if len(self.buffer) >= self.size else []

    def flush(self) -> list[dict]:
        if not self.buffer:
            return []
        path = self.dir / f"pack-{self.next:05d}.parquet"
        table = pa.table({"clip_id": [r["clip_id"] for r, _ in self.buffer],
                          "flac": pa.array([b for _, b in self.buffer], pa.binary())})
        shards.write_table(table, path, PACK_KIND, row_group_size=1)
        rows = [{**r, "path": f"{PACK_DIR}/{path.name}", "row": i} for i, (r, _) in enumerate(self.buffer)]
        self.buffer, self.next = [], self.next + 1
        return rows
