"""Audio packs: many clips as FLAC in one Parquet file, one row group per clip.

For millions of clips (AudioSet's unbalanced set), DVC then tracks thousands of files instead of millions, and a
reader takes one clip without reading its whole pack.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

from a2i_core.core import shards

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


def pack_clip_ids(pack: Path) -> list[str]:
    """The clips a pack holds, read from its id column only."""
    return pq.read_table(pack, columns=["clip_id"])["clip_id"].to_pylist()


def encode_flac(wave: np.ndarray, sample_rate: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, sample_rate, subtype="PCM_16", format="FLAC")
    return buffer.getvalue()


class PackWriter:
    """Gathers finished clips as FLAC and writes them ``size`` at a time into ``packs/pack-NNNNN.parquet``.

    A clip's WAV is deleted only after its pack is written and ``on_pack`` has recorded the pack's rows (the
    download saves its manifest there): until then the WAV is on disk for a rerun to adopt, so a kill or a full
    disk never loses a finished clip.
    """

    def __init__(self, audio_dir: Path, size: int, on_pack: Callable[[list[dict]], None]) -> None:
        self.dir, self.size, self.on_pack = audio_dir / PACK_DIR, size, on_pack
        self.buffer: list[tuple[dict, Path, bytes]] = []
        self.written: Path | None = None  # the buffer's pack, written but not yet recorded by on_pack
        self.dir.mkdir(exist_ok=True)
        existing = sorted(self.dir.glob("pack-*.parquet"))
        self.next = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0

    def add(self, row: dict, wav: Path) -> None:
        """Take a finished clip's WAV; write a pack when ``size`` clips are gathered."""
        if self.written is not None:  # its recording failed: the buffer is that pack's until it is recorded
            self.flush()
        wave, rate = sf.read(wav, dtype="float32")
        self.buffer.append((row, wav, encode_flac(wave, rate)))
        if len(self.buffer) >= self.size:
            self.flush()

    def flush(self) -> None:
        """Write the gathered clips as one pack, hand its manifest rows to ``on_pack``, then delete their WAVs."""
        if not self.buffer:
            return
        if self.written is None:  # else written already, and only recording it failed: not written twice
            path = self.dir / f"pack-{self.next:05d}.parquet"
            table = pa.table({"clip_id": [r["clip_id"] for r, _, _ in self.buffer],
                              "flac": pa.array([b for _, _, b in self.buffer], pa.binary())})
            shards.write_table(table, path, PACK_KIND, row_group_size=1)
            self.written, self.next = path, self.next + 1  # a later pack must not replace it
        self.on_pack([{**r, "path": f"{PACK_DIR}/{self.written.name}", "row": i}
                      for i, (r, _, _) in enumerate(self.buffer)])
        for _, wav, _ in self.buffer:
            wav.unlink(missing_ok=True)
        self.buffer, self.written = [], None

    def pending_ids(self) -> set[str]:
        """Clips gathered for the next pack."""
        return {row["clip_id"] for row, _, _ in self.buffer}
