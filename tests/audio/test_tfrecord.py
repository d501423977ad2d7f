"""The TFRecord reader under hostile files: memory under the bounds a2i_core.audio.tfrecord states, measured with
tracemalloc (numpy reports its arrays to it), and each malformed input one line naming the file and the offset.

The issue's inputs are scaled down with their shape kept (many tiny or empty records, then one wide one): on the
reader before the bounds, each of them needed tens of MB here (GB at full size)."""

from __future__ import annotations

import contextlib
import struct
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from a2i_core.audio import tfrecord
from a2i_core.audio.audioset_release import ReleaseError, read_segments, segment_of
from a2i_core.audio.tfrecord import (
    DECODE_MEMORY_BYTES,
    MAX_RECORD_BYTES,
    READ_MEMORY_BYTES,
    TFRecordError,
    crc32c,
    masked,
    read_records,
)
from tests.audio.test_audioset_release import segment_example
from tests.audio.tfrecord_writer import frame_record, message_field, serialize_sequence_example, varint_bytes

TINY, EMPTY = frame_record(b"x"), frame_record(b"")


def peak_bytes(run: Callable[[], object]) -> int:
    """The most memory ``run`` held at once above what was held before it, as tracemalloc counts it."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        run()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def read_peak(path: Path) -> tuple[int, int]:
    """(records, peak bytes) of reading ``path`` to the end, holding no record."""
    count = 0

    def consume() -> None:
        nonlocal count
        count = sum(1 for _ in read_records(path))

    peak = peak_bytes(consume)
    return count, peak


def header(length: int) -> bytes:
    """A record header claiming ``length`` bytes, with a length CRC that holds: only the cap can refuse it."""
    packed = struct.pack("<Q", length)
    return packed + struct.pack("<I", masked(crc32c(packed)))


def one_line_error(path: Path) -> str:
    with pytest.raises(TFRecordError) as err:
        for _ in read_records(path):
            pass
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    return message


def test_crc32c_many_folds_the_initial_value_at_every_length():
    rng = np.random.default_rng(0)
    items = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in [*range(10), 300] * 4]
    assert tfrecord.crc32c_many(items).tolist() == [crc32c(i) for i in items]
    assert tfrecord.crc32c_many([b"123456789"] * 20).tolist() == [0xE3069283] * 20  # the published check value


@pytest.mark.parametrize(("small", "count", "wide"), [
    (TINY, 10_000, 2048),  # the 1 M 1-byte records + one of 2 KB: 4.7 GB before
    (EMPTY, 20_000, 1024),  # the 2 M empty + one of 1 KB: 2.7 GB, the batch never flushed at width 0
    (TINY, 200, MAX_RECORD_BYTES),  # the grid was count x widest: one wide record widened every lane
], ids=["tiny then 2 KB", "empty then 1 KB", "tiny then the cap"])
def test_hostile_mixes_of_record_sizes_stay_under_the_stated_bound(tmp_path, small, count, wide):
    path = tmp_path / "x.tfrecord"
    path.write_bytes(small * count + frame_record(b"w" * wide))
    records, peak = read_peak(path)
    assert records == count + 1
    assert peak < READ_MEMORY_BYTES, f"{peak / 2**20:.1f} MiB"


def test_full_batches_of_release_sized_records_stay_under_the_stated_bound(tmp_path):
    path = tmp_path / "x.tfrecord"
    path.write_bytes(frame_record(b"s" * 1500) * 3000)  # ~1.5 KB: an AudioSet segment's size, the dense case
    count, peak = read_peak(path)
    assert count == 3000 and peak < READ_MEMORY_BYTES


def test_a_record_over_the_cap_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "x.tfrecord"
    path.write_bytes(TINY + header(16 * MAX_RECORD_BYTES) + bytes(16 * MAX_RECORD_BYTES + 4))

    def refuse() -> None:
        with pytest.raises(TFRecordError):
            list(read_records(path))

    assert peak_bytes(refuse) < MAX_RECORD_BYTES  # it was read whole before (a 20 MB record: 1.15 GB)
    assert one_line_error(path) == (f"{path}: record at byte 17 claims {16 * MAX_RECORD_BYTES} bytes, over the cap "
                                    f"of {MAX_RECORD_BYTES} (an AudioSet record is ~1.5 KB): not a release file")
    path.write_bytes(TINY + frame_record(b"c" * MAX_RECORD_BYTES))
    assert [len(data) for _, data in read_records(path)] == [1, MAX_RECORD_BYTES]


@pytest.mark.parametrize("length", [2**63, 2**64 - 1, 10**12])  # before: OverflowError, -, MemoryError tracebacks
def test_absurd_lengths_are_one_line(tmp_path, length):
    path = tmp_path / "x.tfrecord"
    path.write_bytes(TINY * 3 + header(length) + b"abc")
    assert one_line_error(path).startswith(f"{path}: record at byte 51 claims {length} bytes, over the cap")


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


GOOD = frame_record(b"payload!")  # 24 bytes: header 12, data 8, footer 4
MALFORMED = {
    "length fails its CRC": (GOOD + _flip(GOOD, 2), "corrupt record at byte 24: its length fails its CRC"),
    "data fails its CRC": (GOOD + _flip(GOOD, 14), "corrupt record at byte 24: its data fails its CRC"),
    "stored CRC is wrong": (GOOD + _flip(GOOD, 21), "corrupt record at byte 24: its data fails its CRC"),
    "truncated header": (GOOD + GOOD[:7], "truncated at byte 24: a record header of 7 bytes, not 12"),
    "truncated data": (GOOD + GOOD[:15], "truncated at byte 24: a record of 8 bytes, but the file ends 3 bytes "
                                         "after its header"),
    "truncated footer": (GOOD + GOOD[:22], "truncated at byte 24: a record of 8 bytes, but the file ends 10 bytes "
                                           "after its header"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_every_malformed_record_is_one_line_naming_the_file_and_the_offset(tmp_path, case):
    data, expected = MALFORMED[case]
    path = tmp_path / "x.tfrecord"
    path.write_bytes(data)
    assert one_line_error(path) == f"{path}: {expected}"


def test_a_file_that_cannot_be_read_is_one_line(tmp_path):
    (tmp_path / "x.tfrecord").mkdir()
    assert one_line_error(tmp_path / "x.tfrecord").startswith(f"{tmp_path / 'x.tfrecord'}: cannot read at byte 0: ")


def test_garbage_protobuf_is_only_ever_a_protobuf_or_value_error_and_one_line(tmp_path):
    good = serialize_sequence_example(segment_example("vid_A-1xyz0", 30.0, 10))
    rng = np.random.default_rng(1)
    for i in range(3000):  # random bytes, and a good record with bytes changed, cut out or put in
        if i % 4 == 0:
            data = rng.integers(0, 256, rng.integers(0, 64), dtype=np.uint8).tobytes()
        else:
            data = bytearray(good)
            at = int(rng.integers(0, len(data)))
            data[at : at + int(rng.integers(0, 4))] = rng.integers(0, 256, rng.integers(0, 4), dtype=np.uint8).tobytes()
        with contextlib.suppress(ValueError):  # ProtoError is one; read_segments makes either one line
            segment_of(tfrecord.parse_sequence_example(bytes(data)))
    path = tmp_path / "x.tfrecord"
    path.write_bytes(frame_record(good) + frame_record(b"\x0f" + good))  # wire type 7: no protobuf has it
    with pytest.raises(ReleaseError) as err:
        list(read_segments(path))
    offset = 16 + len(good)
    assert "\n" not in str(err.value)
    assert str(err.value).startswith(f"{path}: record at byte {offset} is not an AudioSet segment: ")


def _at_the_cap(unit: bytes) -> bytes:
    return unit * ((MAX_RECORD_BYTES - 64) // len(unit))


HOSTILE_RECORDS = {  # the worst ratios of decoded objects to bytes found: ~35x, 25x and 20x
    "empty features": message_field(2, message_field(1, message_field(1, b"k") + message_field(
        2, _at_the_cap(b"\x0a\x00")))),
    "two-byte ints": message_field(1, message_field(1, message_field(1, b"k") + message_field(
        2, message_field(3, message_field(1, _at_the_cap(varint_bytes(300))))))),
    "distinct keys": message_field(1, b"".join(message_field(1, message_field(1, f"{i:x}".encode()) +
                                                             message_field(2, b"")) for i in range(25_000))),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_RECORDS))
def test_decoding_a_hostile_record_at_the_cap_stays_under_the_stated_bound(case):
    data = HOSTILE_RECORDS[case]
    assert len(data) <= MAX_RECORD_BYTES
    assert peak_bytes(lambda: tfrecord.parse_sequence_example(data)) < DECODE_MEMORY_BYTES
