"""AudioSet: the official segment CSVs, class labels, rater quality counts and ontology.

Segment files are streamed row by row (the unbalanced one has 2 million rows): only kept pairs are held, and
with a per-class cap only the cap's worth per class. Counts are checked against the files' own headers.
"""

from __future__ import annotations

import csv
import hashlib
import heapq
import json
import logging
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from a2i_core.core.errors import A2IError

log = logging.getLogger(__name__)
YTID = re.compile(r"[A-Za-z0-9_-]{11}")  # use fullmatch: "$" lets a final newline through
HEADER = re.compile(r"(\w+)=\s*(\d+)")
MAX_SEGMENT_SECONDS = 10.0
MAX_START_SECONDS = 12 * 3600.0  # YouTube's longest uploads: a start beyond it is not a real segment


@dataclass(frozen=True)
class Segment:
    ytid: str
    start: float
    end: float
    mids: tuple[str, ...]


@dataclass
class SegmentFile:
    """What a segment file's header promises, and what was read."""

    path: str
    header: dict[str, int] = field(default_factory=dict)
    segments: int = 0
    ytids: set[str] = field(default_factory=set)
    labels: set[str] = field(default_factory=set)
    positive_labels: int = 0
    invalid_rows: int = 0

    def mismatches(self) -> dict[str, tuple[int, int]]:
        found = {"num_ytids": len(self.ytids), "num_segs": self.segments,
                 "num_unique_labels": len(self.labels), "num_positive_labels": self.positive_labels}
        return {k: (v, found[k]) for k, v in self.header.items() if k in found and found[k] != v}


def read_segments(path: Path, stats: SegmentFile) -> Iterator[Segment]:
    """Rows ``YTID, start_seconds, end_seconds, "mid,mid"`` after three '#' header lines."""
    with open(path, newline="") as f:
        for line_no, line in enumerate(f, start=1):
            if line.startswith("#"):
                stats.header.update({k: int(v) for k, v in HEADER.findall(line)})
                continue
            row = next(csv.reader([line], skipinitialspace=True))
            if not row:
                continue
            try:
                ytid, start, end, mids = row[0], float(row[1]), float(row[2]), tuple(row[3].split(","))
            except (IndexError, ValueError):
                stats.invalid_rows += 1
                log.warning("%s:%d: not a segment row, skipped", path, line_no)
                continue
            stats.segments += 1
            stats.ytids.add(ytid)
            stats.labels.update(mids)
            stats.positive_labels += len(mids)
            # Checked here, before an id or a time can reach a URL, a path or a command line.
            if not YTID.fullmatch(ytid) or not (0 <= start < end <= min(start + MAX_SEGMENT_SECONDS + 0.01,
                                                                      MAX_START_SECONDS + MAX_SEGMENT_SECONDS)):
                stats.invalid_rows += 1
                log.warning("%s:%d: invalid YTID or times (%r, %s, %s), skipped", path, line_no, ytid, start, end)
                continue
            yield Segment(ytid, start, end, mids)


def _rows(path: Path, columns: list[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """A metadata CSV's rows with their line numbers; a file lacking a column is one line, not a KeyError."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise A2IError(f"{path}: no column {missing[0]!r} (expected {', '.join(columns)})")
        yield from enumerate(reader, start=2)


def read_class_labels(path: Path) -> dict[str, str]:
    """mid -> display name, from ``index,mid,display_name`` (names may hold quoted commas)."""
    return {row["mid"]: row["display_name"] for _, row in _rows(path, ["mid", "display_name"])}


def read_quality(path: Path, mids_by_index: list[str]) -> dict[str, float]:
    """mid -> num_true / num_rated, from ``label_id,num_rated,num_true`` (label_id: a class index or a mid)."""
    quality = {}
    for line, row in _rows(path, ["label_id", "num_rated", "num_true"]):
        label = (row["label_id"] or "").strip()
        try:
            mid = mids_by_index[int(label)] if label.isdigit() else label
            rated, true = int(row["num_rated"]), int(row["num_true"])
        except (IndexError, TypeError, ValueError):
            log.warning("%s:%d: not a quality row, skipped", path, line)
            continue
        quality[mid] = true / rated if rated > 0 else 0.0
    return quality


def read_restrictions(path: Path) -> dict[str, set[str]]:
    """mid -> its ontology restrictions (abstract, blacklist)."""
    try:
        nodes = json.loads(Path(path).read_text())
        return {node["id"]: set(node.get("restrictions", [])) for node in nodes}
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise A2IError(f"{path}: not an AudioSet ontology (a list of nodes with an id): {err}") from None


def readable_name(display_name: str) -> str:
    """'Male speech, man speaking' -> 'male speech'; 'Dog' -> 'dog'; acronyms ('MP3') are kept."""
    name = display_name.split(",")[0].strip()
    if len(name) > 1 and name[1].islower():
        name = name[0].lower() + name[1:]
    return name


def label_filter(names: dict[str, str], quality: dict[str, float], restrictions: dict[str, set[str]],
                 min_quality: float, excluded_restrictions: list[str], include: list[str],
                 exclude: list[str]) -> tuple[set[str], dict[str, str]]:
    """Kept mids, and the reason each other label was dropped."""
    kept, dropped = set(), {}
    for mid, name in names.items():
        if include and mid not in include and name not in include:
            dropped[mid] = "not_included"
        elif mid in exclude or name in exclude:
            dropped[mid] = "excluded"
        elif restrictions.get(mid, set()) & set(excluded_restrictions):
            dropped[mid] = sorted(restrictions[mid] & set(excluded_restrictions))[0]
        elif mid not in quality:
            dropped[mid] = "unrated"
        elif quality[mid] < min_quality:
            dropped[mid] = "low_quality"
        else:
            kept.add(mid)
    return kept, dropped


def select_pairs(files: list[Path], kept: set[str], cap: int, seed: int) -> tuple[list[tuple[Segment, str]],
                                                                                   list[SegmentFile], Counter]:
    """(segment, mid) pairs of kept labels; with a cap, a stable pseudo-random ``cap`` per class."""
    stats, heaps, pairs, dropped_pairs = [], {}, [], Counter()
    for path in files:
        file_stats = SegmentFile(str(path))
        stats.append(file_stats)
        for segment in read_segments(path, file_stats):
            for mid in segment.mids:
                if mid not in kept:
                    dropped_pairs["label_not_kept"] += 1
                    continue
                if not cap:
                    pairs.append((segment, mid))
                    continue
                # Keep the cap smallest hashes per class: the same choice whatever the file order.
                key = -int.from_bytes(hashlib.sha256(f"{seed}:{segment.ytid}:{mid}".encode()).digest()[:8], "big")
                heap = heaps.setdefault(mid, [])
                if len(heap) < cap:
                    heapq.heappush(heap, (key, segment.ytid, segment.start, segment))
                else:
                    dropped_pairs["over_class_cap"] += 1
                    heapq.heappushpop(heap, (key, segment.ytid, segment.start, segment))
        for name, (expected, found) in file_stats.mismatches().items():
            log.warning("%s: header says %s=%d, read %d", path, name, expected, found)
    for mid, heap in heaps.items():
        pairs += [(item[3], mid) for item in heap]
    if not pairs:
        raise A2IError("AudioSet: no (segment, label) pair passes the label filter")
    return pairs, stats, dropped_pairs
