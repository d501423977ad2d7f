"""Importing AudioSet's released embeddings: records/s and peak memory, for 10 and 100 TFRecord files.

Synthetic release files in the official layout (SequenceExamples: video_id, start/end, labels, one 128-byte
embedding per second, 10 s each), written by ``audio.tfrecord``; ``--candidates`` of the records, spread evenly over
the files, are candidates at every size, so that only the number of files changes. Three paths, each
in a fresh process per size: (a) framing and both CRC checks only (``read_records``), (b) also decoding each
SequenceExample to a segment (``read_segments``), (c) the whole import into audio feature shards
(``import_release``, ``--shard-rows`` rows each). Memory is the resident high-water mark (VmHWM) above the resident
size once the modules are loaded (the mark is reset there); it must not grow with the number of files: the ratio
largest / smallest must stay at or under 1.2 (plus 8 MiB of slack). The candidates' index is held whole: its
size per candidate is printed too.

    python benchmarks/release.py            # 10 and 100 files of 500 records: the run in benchmarks/RESULTS.md
    python benchmarks/release.py --tiny     # seconds of work
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
from cells import resident_mib, run_cell  # benchmarks/cells.py, beside this script

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.audio.tfrecord_writer, run from anywhere

from a2i_core.audio import tfrecord  # noqa: E402
from a2i_core.audio.audioset_release import import_release, read_segments, release_files, wanted_segments  # noqa: E402
from a2i_core.core import shards  # noqa: E402
from a2i_core.core.candidates import CANDIDATES_KIND, candidates_table  # noqa: E402
from tests.audio import tfrecord_writer  # noqa: E402

RATIO_LIMIT = 1.2
SLACK_MIB = 8.0
PATHS = {"read": "(a) framing + CRC checks", "parse": "(b) + SequenceExample decoding", "import": "(c) import_release"}


def write_files(root: Path, files: int, records: int, candidates: int, seed: int = 0) -> list[tuple[str, float]]:
    """``files`` release files of ``records`` segments each; returns ``candidates`` of them, spread evenly."""
    rng = np.random.default_rng(seed)
    every = max(1, files * records // candidates)
    chosen = []
    for f in range(files):
        examples = []
        for r in range(records):
            video_id, start = f"v{f:05d}r{r:04d}", float(r % 300)
            frames = rng.integers(0, 256, (10, 128), dtype=np.uint8)
            examples.append(tfrecord_writer.serialize_sequence_example(tfrecord.SequenceExample(
                context={"video_id": [video_id.encode()], "start_time_seconds": [start],
                         "end_time_seconds": [start + 10.0], "labels": [int(x) for x in rng.integers(0, 527, 3)]},
                feature_lists={"audio_embedding": [[row.tobytes()] for row in frames]})))
            if (f * records + r) % every == 0 and len(chosen) < candidates:
                chosen.append((video_id, start))
        path = root / f"part{f % 4}" / f"{f:05d}.tfrecord"  # in subfolders, as the release's bal_train/, eval/ ...
        path.parent.mkdir(parents=True, exist_ok=True)
        tfrecord_writer.write_records(path, examples)
    return chosen


def write_candidates(path: Path, segments: list[tuple[str, float]]) -> None:
    frame = pd.DataFrame({"clip_id": [f"{y}_{round(s * 1000)}" for y, s in segments], "group": [y for y, _ in segments],
                          "label": "x", "prompt": "x", "split": "train", "source": "audioset",
                          "ytid": [y for y, _ in segments], "start": [s for _, s in segments],
                          "end": [s + 10 for _, s in segments]})
    shards.write_table(candidates_table(frame), path, CANDIDATES_KIND)


def index_size(candidates: Path) -> float:
    """Bytes per candidate of the index ``import_release`` holds whole (Python objects, by tracemalloc)."""
    wanted_segments(candidates)  # once before measuring: the first read also allocates caches of its libraries
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    index = wanted_segments(candidates)
    size = (tracemalloc.get_traced_memory()[0] - before) / len(index)
    tracemalloc.stop()
    return size


def child(mode: str, release: Path, candidates: Path, out: Path, shard_rows: int) -> None:
    """Run in a fresh process: one path over the release; print records, seconds and peak memory above the start."""
    with contextlib.suppress(OSError):  # VmHWM starts again from the current resident size (Linux >= 4.0)
        Path("/proc/self/clear_refs").write_text("5")
    base = resident_mib("VmRSS")
    start = time.perf_counter()
    records = 0
    if mode == "import":
        records = import_release(release, candidates, out, shard_rows)["records"]
    else:
        for path in release_files(release):
            stream = tfrecord.read_records(path) if mode == "read" else read_segments(path)
            records += sum(1 for _ in stream)
    seconds = time.perf_counter() - start
    print(json.dumps({"records": records, "seconds": seconds, "peak_mib": resident_mib("VmHWM") - base}))


def run_case(mode: str, release: Path, candidates: Path, out: Path, shard_rows: int) -> dict:
    return run_cell(__file__, ["--child", mode, "--release", str(release), "--candidates-table", str(candidates),
                               "--out", str(out), "--shard-rows", str(shard_rows)], mode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", default="10,100", help="numbers of files, smallest first (comma-separated)")
    parser.add_argument("--records", type=int, default=500, help="records per file")
    parser.add_argument("--candidates", type=int, default=2500, help="candidate segments, at every size")
    parser.add_argument("--shard-rows", type=int, default=1000)
    parser.add_argument("--tiny", action="store_true", help="a few small files, for a smoke test")
    parser.add_argument("--child", choices=sorted(PATHS), help=argparse.SUPPRESS)
    parser.add_argument("--release", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--candidates-table", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.release, args.candidates_table, args.out, args.shard_rows)
    if args.tiny:
        args.files, args.records, args.candidates, args.shard_rows = "2,8", 40, 40, 20
    sizes = [int(n) for n in args.files.split(",")]

    first, last = sizes[0], sizes[-1]
    results: dict[tuple[str, int], dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            root = Path(tmp) / f"{n}files"
            segments = write_files(root / "release", n, args.records, args.candidates)
            write_candidates(root / "candidates.parquet", segments)
            megabytes = sum(p.stat().st_size for p in release_files(root / "release")) / 2**20
            for mode in PATHS:
                results[mode, n] = run_case(mode, root / "release", root / "candidates.parquet", root / "out",
                                            args.shard_rows)
            results["size", n] = {"mib": megabytes}
        index_bytes = index_size(Path(tmp) / f"{last}files" / "candidates.parquet")

    print(f"\nimporting the release: {args.records} records per file (10 s each), {args.candidates} candidates, "
          f"shards of {args.shard_rows} rows; peak = resident high-water mark above the start, a fresh process "
          "per cell\n")
    print("| path | " + " | ".join(f"{n} files rec/s | {n} files peak MiB" for n in sizes)
          + f" | peak ratio {last} / {first} |")
    print("| --- | " + " | ".join("---: | ---:" for _ in sizes) + " | ---: |")
    for mode, label in PATHS.items():
        cells = [results[mode, n] for n in sizes]
        rates = [c["records"] / c["seconds"] for c in cells]
        ratio = (cells[-1]["peak_mib"] + 1) / (cells[0]["peak_mib"] + 1)
        print(f"| {label} | " + " | ".join(f"{r:.0f} | {c['peak_mib']:.1f}" for r, c in zip(rates, cells, strict=True))
              + f" | {ratio:.2f} |")
    print("\n" + ", ".join(f"{n} files: {results['size', n]['mib']:.1f} MiB, {results['read', n]['records']} records"
                           for n in sizes))
    print(f"candidates' index: {index_bytes:.0f} bytes per candidate (tracemalloc of wanted_segments)")
    small, large = results["import", first]["peak_mib"], results["import", last]["peak_mib"]
    bounded = large <= RATIO_LIMIT * small + SLACK_MIB
    print(f"\nimport peak {last} / {first} files: {large:.1f} / {small:.1f} MiB (limit x{RATIO_LIMIT} + "
          f"{SLACK_MIB:g} MiB): {'bounded' if bounded else 'GROWS WITH THE FILES'}")
    if not bounded:
        sys.exit(1)


if __name__ == "__main__":
    main()
