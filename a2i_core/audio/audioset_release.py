"""AudioSet's released embeddings as audio features: the shards embed_audio writes, with no audio and no VGGish.

The release (``features.tar.gz``, extracted) holds TFRecord files of SequenceExamples, one per 10 s segment: its
``video_id``, ``start_time_seconds``, ``end_time_seconds`` and ``labels``, and the feature list ``audio_embedding``
of one 128-byte string per second: TensorFlow VGGish with PCA and 8-bit quantisation, the values 0..255 that the
local postprocess gives too. Only the candidates' segments are imported, file by file and record by record.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from a2i_core.audio.features import write_audio_shard
from a2i_core.audio.tfrecord import Feature, ProtoError, SequenceExample, parse_sequence_example, read_records
from a2i_core.audio.vggish import EMBEDDING_DIM
from a2i_core.core import provenance, shards
from a2i_core.core.candidates import CANDIDATES_KIND, RELEASED_SOURCE
from a2i_core.core.errors import A2IError

log = logging.getLogger(__name__)
SUFFIX = ".tfrecord"


class ReleaseError(A2IError):
    pass


@dataclass(frozen=True)
class Segment:
    video_id: str
    start: float  # seconds, as the release stores it: a float32
    frames: np.ndarray  # (n, 128) uint8, one per second


def segment_of(example: SequenceExample) -> Segment:
    """The segment a release record holds; ValueError if it is not one."""
    video_id = _single(example.context, "video_id", bytes).decode("utf-8", "replace")
    start = _single(example.context, "start_time_seconds", float)
    seconds = example.feature_lists.get("audio_embedding", [])
    for i, second in enumerate(seconds):
        if len(second) != 1 or not isinstance(second[0], bytes) or len(second[0]) != EMBEDDING_DIM:
            raise ValueError(f"audio_embedding second {i} is not one {EMBEDDING_DIM}-byte string")
    frames = np.frombuffer(b"".join(s[0] for s in seconds), np.uint8).reshape(len(seconds), EMBEDDING_DIM)
    return Segment(video_id, start, frames)


def _single(context: dict[str, Feature], name: str, kind: type):
    values = context.get(name, [])
    if len(values) != 1 or not isinstance(values[0], kind):
        raise ValueError(f"context feature {name!r} is not one {kind.__name__}")
    return values[0]


def read_segments(path: Path) -> Iterator[Segment]:
    """The segments of one release file, a record at a time; one line naming the file and the byte offset of a
    record that is corrupt or no segment."""
    for offset, data in read_records(path):
        try:
            yield segment_of(parse_sequence_example(data))
        except (ProtoError, ValueError) as err:
            raise ReleaseError(f"{path}: record at byte {offset} is not an AudioSet segment: {err}") from None


def release_files(directory: Path) -> list[Path]:
    """Every ``*.tfrecord`` under ``directory``, in a fixed order (by path, never the file system's listing)."""
    if not directory.is_dir():
        raise ReleaseError(f"audio_encoder.release: {directory} is not a directory (extract the release's "
                           "features.tar.gz there)")
    files = sorted(p for p in directory.rglob(f"*{SUFFIX}") if p.is_file())
    if not files:
        raise ReleaseError(f"audio_encoder.release: no *{SUFFIX} files under {directory}")
    return files


def segment_key(video_id: str, start: float) -> tuple[str, float]:
    """How a candidate and a record meet: the YouTube id and the start, as a float32 as the release stores it (its
    clip id's milliseconds could round differently from a float32 start)."""
    return video_id, float(np.float32(start))


def wanted_segments(candidates: Path) -> dict[tuple[str, float], str]:
    """segment key -> clip id, for each candidate clip (a few hundred bytes each: only the columns needed)."""
    sources = set(shards.read_table(candidates, CANDIDATES_KIND, columns=["source"])["source"].to_pylist())
    if sources - {RELEASED_SOURCE}:
        raise ReleaseError(f"audio_encoder.release holds AudioSet segments, but the candidates come from "
                           f"{', '.join(sorted(sources - {RELEASED_SOURCE}))}: set audio_encoder.release: null or "
                           f"data.source: {RELEASED_SOURCE}")
    table = shards.read_table(candidates, CANDIDATES_KIND, columns=["clip_id", "ytid", "start"])
    starts = table["start"].to_numpy().astype(np.float32).tolist()  # as segment_key rounds them
    return dict(zip(zip(table["ytid"].to_pylist(), starts, strict=True), table["clip_id"].to_pylist(), strict=True))


def candidate_segments(files: list[Path], wanted: dict[tuple[str, float], str], found: set[str],
                       counts: dict[str, int]) -> Iterator[tuple[str, np.ndarray]]:
    """(clip id, frames) of each record of ``files`` whose segment is wanted, the first record of each only; adds
    the clip ids met to ``found`` and counts the records skipped, by reason."""
    bar = tqdm(total=sum(p.stat().st_size for p in files), desc="embed_audio: release", unit="B", unit_scale=True)
    with bar:
        for path in files:
            for segment in read_segments(path):
                counts["records"] += 1
                clip_id = wanted.get(segment_key(segment.video_id, segment.start))
                if clip_id is None or clip_id in found:
                    counts["not_candidates" if clip_id is None else "duplicates"] += 1
                    continue
                if not len(segment.frames):  # before `found`: a later good copy of the clip is still taken
                    counts["empty"] += 1
                    log.warning("skipped %s: its record in %s holds no embedding", clip_id, path)
                    continue
                found.add(clip_id)
                yield clip_id, segment.frames
            bar.update(path.stat().st_size)
            bar.set_postfix(records=counts["records"], candidates=len(found))


def import_release(release: Path, candidates: Path, out_dir: Path, shard_rows: int) -> dict:
    """Write the release's embeddings of the candidates' clips as audio feature shards of ``shard_rows`` rows.

    Memory holds one shard's frames, one batch of records and the candidates' index, whatever the number of files.
    Every shard records the release's provenance. Shards of an earlier run are replaced; if the import fails, those
    it wrote are removed.
    """
    start = time.monotonic()
    wanted = wanted_segments(candidates)
    files = release_files(release)
    shards.prepare_shard_dir(out_dir, 0)  # what an earlier run (maybe of local VGGish) wrote is replaced
    metadata = provenance.to_metadata(provenance.RELEASE_AUDIO)
    counts = {"records": 0, "not_candidates": 0, "duplicates": 0, "empty": 0}
    found: set[str] = set()
    written: list[Path] = []
    try:
        stream = candidate_segments(files, wanted, found, counts)
        while chunk := list(itertools.islice(stream, shard_rows)):
            path = shards.shard_path(out_dir, len(written))
            write_audio_shard(path, [c for c, _ in chunk], [f for _, f in chunk], EMBEDDING_DIM, metadata)
            written.append(path)
        if not written:
            raise ReleaseError(f"audio_encoder.release: none of the {len(wanted)} candidate clips has a record in "
                               f"{release} ({counts['records']} records in {len(files)} files)")
    except BaseException:
        for path in written:  # no half-imported release is left to pass for a whole one
            path.unlink(missing_ok=True)
        raise
    seconds = time.monotonic() - start
    imported = len(found)  # clips with a usable record; one with only empty records is among the missing
    missing = [clip_id for clip_id in wanted.values() if clip_id not in found]
    _log_skipped(missing, counts)
    log.info("imported %d clips from %d release records in %d files in %.1f s (%.0f records/s)", imported,
             counts["records"], len(files), seconds, counts["records"] / max(seconds, 1e-9))
    return {"clips": imported, "candidates_without_record": len(missing), "records": counts["records"],
            "records_not_candidates": counts["not_candidates"], "duplicate_records": counts["duplicates"],
            "empty_records": counts["empty"], "files": len(files), "shards": len(written),
            "seconds": round(seconds, 3)}


def _log_skipped(missing: list[str], counts: dict[str, int]) -> None:
    if missing:
        log.info("%d candidate clips have no record in the release, e.g. %s: no features for them", len(missing),
                 ", ".join(sorted(missing)[:3]))
    if counts["not_candidates"]:
        log.info("%d release records skipped: their segments are not candidates (data.* filters, or another set)",
                 counts["not_candidates"])
    if counts["duplicates"]:
        log.info("%d release records skipped: a segment already imported from an earlier file", counts["duplicates"])
