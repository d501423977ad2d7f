"""The TFRecord reader's peak memory on hostile files, against the bound ``audio.tfrecord`` states.

The inputs of issue 25: many tiny or empty records then one wide one (which used to widen the CRC grid of every
record before it, or never let the batch flush), one huge record, and lengths no file can hold. Each case reads the
whole file with ``read_records`` in a fresh process; peak = the resident high-water mark (VmHWM) above the
resident size once the modules are loaded (the mark is reset there), so an interpreter's start is not counted.
A case passes when it ends in one ``TFRecordError`` line or reads every record with a peak under
``READ_MEMORY_BYTES`` plus ``SLACK_MIB`` (the allocator keeps freed pages a while).

    python benchmarks/tfrecord_memory.py                 # the issue's sizes (17-32 MB files; seconds each)
    python benchmarks/tfrecord_memory.py --tiny          # a hundredth of them
    python benchmarks/tfrecord_memory.py --module OLD.py # another copy of tfrecord.py, e.g. an older commit's:
                                                         # its address space is capped (--limit-gib) to spare the
                                                         # machine: that copy needed tens of GB for "then 16 KB"
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import resource
import struct
import sys
import tempfile
import time
from pathlib import Path

from cells import resident_mib, run_cell  # benchmarks/cells.py, beside this script

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.audio.tfrecord_writer, run from anywhere

from a2i_core.audio import tfrecord  # noqa: E402
from a2i_core.core.errors import A2IError  # noqa: E402
from tests.audio.tfrecord_writer import frame_record  # noqa: E402

SLACK_MIB = 8.0


def length_only(length: int) -> bytes:
    """A header claiming ``length`` bytes whose length CRC holds, and three bytes: only the cap can stop it."""
    packed = struct.pack("<Q", length)
    return packed + struct.pack("<I", tfrecord.masked(tfrecord.crc32c(packed))) + b"abc"


def cases(scale: float) -> dict[str, bytes]:
    """Each case's file contents; ``scale`` shrinks the record counts and the huge record."""
    n = max(1, round(1_000_000 * scale))
    huge = max(tfrecord.MAX_RECORD_BYTES + 1, round(20_000_000 * scale))
    tiny, empty = frame_record(b"x"), frame_record(b"")
    return {
        f"{n:,} 1-byte records, then 2 KB": tiny * n + frame_record(b"w" * 2048),
        f"{2 * n:,} empty records, then 1 KB": empty * (2 * n) + frame_record(b"w" * 1024),
        f"{n:,} 1-byte records, then 16 KB": tiny * n + frame_record(b"w" * 16384),
        f"one record of {huge:,} bytes": frame_record(bytes(huge)),
        "length field 2^63": length_only(2**63),
        "length field 10^12": length_only(10**12),
    }


def child(module: Path | None, path: Path, limit_gib: float) -> None:
    """Run in a fresh process: read ``path`` with ``module`` (this tree's tfrecord.py if None); print the figures."""
    reader = tfrecord
    if module is not None:
        spec = importlib.util.spec_from_file_location("tfrecord_under_test", module)
        reader = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = reader  # its dataclasses look their module up
        spec.loader.exec_module(reader)
    gib = int(limit_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (gib, gib))
    with contextlib.suppress(OSError):  # VmHWM starts again from the current resident size (Linux >= 4.0)
        Path("/proc/self/clear_refs").write_text("5")
    base = resident_mib("VmRSS")
    start = time.perf_counter()
    records, outcome = 0, "read"
    try:
        for _ in reader.read_records(path):
            records += 1
    except A2IError as err:
        outcome = f"one line: {str(err).removeprefix(f'{path}: ')}"
    except Exception as err:  # what an older reader did is the measurement
        outcome = f"traceback: {type(err).__name__}"
    print(json.dumps({"records": records, "seconds": time.perf_counter() - start,
                      "peak_mib": resident_mib("VmHWM") - base, "outcome": outcome}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a hundredth of the issue's sizes, for a smoke test")
    parser.add_argument("--module", type=Path, help="measure this copy of tfrecord.py instead of the package's")
    parser.add_argument("--limit-gib", type=float, default=8.0, help="address space of each case's process")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.module, args.child, args.limit_gib)

    bound = tfrecord.READ_MEMORY_BYTES / 2**20
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in cases(0.01 if args.tiny else 1.0).items():
            path = Path(tmp) / "case.tfrecord"
            path.write_bytes(data)
            extra = ["--module", str(args.module.resolve())] if args.module else []
            result = run_cell(__file__, ["--child", str(path), "--limit-gib", str(args.limit_gib), *extra], name)
            rows.append((name, len(data) / 2**20, result))

    reader = args.module or "a2i_core/audio/tfrecord.py"
    print(f"\nread_records of {reader}: peak = resident high-water mark above the start, a fresh process per case; "
          f"bound {bound:g} MiB (READ_MEMORY_BYTES) + {SLACK_MIB:g} MiB slack\n")
    print("| case | file MiB | records | s | peak MiB | outcome |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    failed = []
    for name, mib, r in rows:
        print(f"| {name} | {mib:.1f} | {r['records']:,} | {r['seconds']:.1f} | {r['peak_mib']:.1f} | {r['outcome']} |")
        if r["outcome"].startswith("traceback") or r["peak_mib"] > bound + SLACK_MIB:
            failed.append(name)
    print(f"\n{len(rows) - len(failed)} of {len(rows)} cases within the bound"
          + (f"; over it or a traceback: {', '.join(failed)}" if failed else ""))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
