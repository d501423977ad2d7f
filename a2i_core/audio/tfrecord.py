"""TFRecord files of ``tf.train.SequenceExample``, read without TensorFlow (tests/audio/tfrecord_writer.py writes them).

A TFRecord file is a run of records, each: uint64 length, uint32 masked CRC-32C of those 8 bytes, the data, uint32
masked CRC-32C of the data (little-endian). Both CRCs are checked: a corrupt record, a truncated file or a length
over ``MAX_RECORD_BYTES`` stops with one line naming the file and the record's byte offset.

Memory is bounded by ``READ_MEMORY_BYTES`` whatever the file holds: a record's length is checked against the cap
before anything is read, and records are held in batches whose data, Python objects and CRC grid each stay under
``BATCH_BYTES`` (a batch is counted by its widest record, so no mix of sizes can starve or inflate it). Decoding
one record (``parse_sequence_example``) makes at most ``DECODE_MEMORY_BYTES`` of Python objects.

The data is a protobuf message; this module decodes exactly the messages a SequenceExample is made of (from
tensorflow/core/example/{example,feature}.proto):

    SequenceExample { Features context = 1; FeatureLists feature_lists = 2; }
    Features        { map<string, Feature> feature = 1; }
    FeatureLists    { map<string, FeatureList> feature_list = 1; }
    FeatureList     { repeated Feature feature = 1; }
    Feature         { oneof { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    BytesList       { repeated bytes value = 1; }
    FloatList       { repeated float value = 1; }
    Int64List       { repeated int64 value = 1; }

A map entry is a message { key = 1; value = 2; }. Numeric lists may be packed or not. A Feature decodes to a
plain list of bytes, floats or ints.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from a2i_core.core.errors import A2IError

CASTAGNOLI = 0x82F63B78  # CRC-32C's polynomial, bit-reversed
MASK_DELTA = 0xA282EAD8
HEADER = struct.Struct("<QI")  # length, masked CRC of the length
FOOTER = struct.Struct("<I")  # masked CRC of the data
# An AudioSet SequenceExample holds one 10 s segment: ten 128-byte seconds plus its id, times and labels, ~1.5 KB.
# 256 KiB is ~170 times that (a segment of over half an hour would fit), yet a record, and what decoding it makes,
# stays a few MB: a length past it is a corrupt or foreign file, refused before it is read.
MAX_RECORD_BYTES = 256 << 10
# Records held, and CRC-checked side by side, at once: ~1,200 AudioSet records. Numpy's steps go by the widest
# record, so more lanes a step is faster, with less to gain each doubling (1 MiB: ~25% slower, 4 MiB: ~15% faster).
BATCH_BYTES = 2 << 20
# What Python holds for a record of a batch besides its data: the (offset, data, CRC) tuple, its two ints, the
# bytes object's header, list slots, and its CRC's int once checked (~220 bytes by sys.getsizeof). It is what keeps
# a batch of empty records from growing without end.
RECORD_OVERHEAD_BYTES = 256
# read_records' peak: a full batch and its CRC grid, each under BATCH_BYTES, plus 1 MiB for the file's buffer,
# numpy's per-column temporaries and the CRC results. Measured: 3.6 MiB for full batches of 1.5 KB records
# (tests/audio/test_tfrecord.py), 1.9 MiB resident for a million tiny records then a wide one (benchmarks/).
READ_MEMORY_BYTES = 2 * BATCH_BYTES + (1 << 20)
# Decoding a record makes up to ~35 bytes of Python objects per byte of it, measured on the worst case found (a
# feature list of empty features: two bytes each, each a 56-byte list and its slot), plus nested messages' copies.
DECODE_MEMORY_BYTES = 48 * MAX_RECORD_BYTES
# numpy's step over a column costs about what pure Python spends on 16 bytes: a batch whose bytes would fill fewer
# than this many lanes of its widest record (a few records, or one wide among tiny ones) is checked one by one.
MIN_LANES = 16
assert MAX_RECORD_BYTES + RECORD_OVERHEAD_BYTES <= BATCH_BYTES  # the largest record fits a batch of its own

Feature = list  # list[bytes] | list[float] | list[int]


class TFRecordError(A2IError):
    """A record that is not what its file promises; the message names the file and the byte offset."""


class ProtoError(ValueError):
    """Bytes that are not the protobuf message expected."""


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ CASTAGNOLI if crc & 1 else crc >> 1
        table.append(crc)
    return table


TABLE = _crc_table()
TABLE_NP = np.array(TABLE, np.uint32)


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C (Castagnoli) of ``data``, continuing from ``crc``; pure Python, about 10 MB/s."""
    crc ^= 0xFFFFFFFF
    table = TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def crc32c_many(items: Sequence[bytes]) -> np.ndarray:
    """CRC-32C of each item, computed side by side: one numpy step per byte position for all of them.

    Items are right-aligned in a grid of len(items) x the longest (its only large allocation): leading zeros leave
    a register that starts at 0 unchanged. The CRC is linear, so the register's initial 0xFFFFFFFF is the same as
    starting from 0 with it XORed into the item's first four bytes; an item of n < 4 bytes takes only n of them,
    and the rest of the initial value is left in the register, shifted out by 8n bits. About 8x pure Python for
    ~1.5 kB records in lanes of hundreds.
    """
    lengths = np.array([len(item) for item in items], np.int64)
    width = int(lengths.max(initial=0))
    grid = np.zeros((len(items), width), np.uint8, order="F")  # each column contiguous: no transposed copy
    for row, item in enumerate(items):
        if item:
            start = width - len(item)
            grid[row, start:] = np.frombuffer(item, np.uint8)
            grid[row, start : start + 4] ^= 0xFF
    crc = np.zeros(len(items), np.uint32)
    for column in grid.T:
        crc = TABLE_NP[(crc ^ column) & 0xFF] ^ (crc >> 8)
    left = (np.uint64(0xFFFFFFFF) >> (8 * np.minimum(lengths, 4)).astype(np.uint64)).astype(np.uint32)
    return crc ^ left ^ np.uint32(0xFFFFFFFF)


def masked(crc: int) -> int:
    """TFRecord's masked CRC: rotated and offset, so that a CRC stored beside its data does not checksum to 0."""
    return (((crc >> 15) | (crc << 17)) + MASK_DELTA) & 0xFFFFFFFF


def read_records(path: str | Path, batch_bytes: int = BATCH_BYTES) -> Iterator[tuple[int, bytes]]:
    """(byte offset, data) of each record of a TFRecord file, in order, once its CRCs are checked.

    Memory stays under ``READ_MEMORY_BYTES`` (with the default ``batch_bytes``), whatever the file holds.
    """
    path = Path(path)
    batch: list[tuple[int, bytes, int]] = []  # (offset, data, stored masked CRC)
    widest = 0
    offset = 0
    try:
        with open(path, "rb") as f:
            while header := f.read(HEADER.size):
                length = _record_length(path, offset, header)
                # A batch costs its count times its widest record (the CRC grid) plus each record's objects:
                # checked before this record joins, so neither many tiny records nor one wide one outgrows it.
                if batch and (len(batch) + 1) * (max(widest, length) + RECORD_OVERHEAD_BYTES) > batch_bytes:
                    yield from _checked(path, batch)
                    batch, widest = [], 0
                data = f.read(length)
                footer = f.read(FOOTER.size)
                if len(footer) < FOOTER.size:
                    raise TFRecordError(f"{path}: truncated at byte {offset}: a record of {length} bytes, but the "
                                        f"file ends {len(data) + len(footer)} bytes after its header")
                batch.append((offset, data, FOOTER.unpack(footer)[0]))
                offset += HEADER.size + length + FOOTER.size
                widest = max(widest, length)
    except OSError as err:  # only this generator's own reads: a consumer's errors never enter it
        raise TFRecordError(f"{path}: cannot read at byte {offset}: {err.strerror or err}") from None
    yield from _checked(path, batch)


def _record_length(path: Path, offset: int, header: bytes) -> int:
    """The data length a record's header gives, once checked against its CRC and MAX_RECORD_BYTES."""
    if len(header) < HEADER.size:
        raise TFRecordError(f"{path}: truncated at byte {offset}: a record header of {len(header)} bytes, not "
                            f"{HEADER.size}")
    length, length_crc = HEADER.unpack(header)
    if masked(crc32c(header[:8])) != length_crc:  # before trusting the length with anything
        raise TFRecordError(f"{path}: corrupt record at byte {offset}: its length fails its CRC")
    if length > MAX_RECORD_BYTES:
        raise TFRecordError(f"{path}: record at byte {offset} claims {length} bytes, over the cap of "
                            f"{MAX_RECORD_BYTES} (an AudioSet record is ~1.5 KB): not a release file")
    return length


def _checked(path: Path, batch: list[tuple[int, bytes, int]]) -> Iterator[tuple[int, bytes]]:
    datas = [data for _, data, _ in batch]
    dense = sum(map(len, datas)) >= MIN_LANES * max(map(len, datas), default=0)
    crcs = crc32c_many(datas).tolist() if dense else [crc32c(d) for d in datas]
    for (offset, _, stored), crc in zip(batch, crcs, strict=True):
        if masked(crc) != stored:
            raise TFRecordError(f"{path}: corrupt record at byte {offset}: its data fails its CRC")
    for offset, data, _ in batch:
        yield offset, data


# Protobuf wire format, for the messages above only.

VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5


@dataclass
class SequenceExample:
    context: dict[str, Feature] = field(default_factory=dict)
    feature_lists: dict[str, list[Feature]] = field(default_factory=dict)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ProtoError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ProtoError("varint longer than 10 bytes")


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of each field of a message: an int for a varint, else the raw bytes."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            value, pos = _varint(buf, pos)
        elif wire == LENGTH_DELIMITED:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire in (FIXED32, FIXED64):
            size = 4 if wire == FIXED32 else 8
            value, pos = buf[pos : pos + size], pos + size
        else:
            raise ProtoError(f"field {number} has wire type {wire}, which no SequenceExample uses")
        if pos > end:
            raise ProtoError(f"field {number} runs past the end of its message")
        yield number, wire, value


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _floats(buf: bytes) -> list[float]:
    values: list[float] = []
    for number, wire, value in _fields(buf):
        if number != 1:
            continue
        if wire == LENGTH_DELIMITED and len(value) % 4 == 0:  # packed
            values += struct.unpack(f"<{len(value) // 4}f", value)
        elif wire == FIXED32:
            values += struct.unpack("<f", value)
        else:
            raise ProtoError("a FloatList value that is no float")
    return values


def _ints(buf: bytes) -> list[int]:
    values: list[int] = []
    for number, wire, value in _fields(buf):
        if number != 1:
            continue
        if wire == LENGTH_DELIMITED:  # packed
            pos = 0
            while pos < len(value):
                item, pos = _varint(value, pos)
                values.append(_signed64(item))
        elif wire == VARINT:
            values.append(_signed64(value))
        else:
            raise ProtoError("an Int64List value that is no varint")
    return values


def _bytes_values(buf: bytes) -> list[bytes]:
    values = []
    for number, wire, value in _fields(buf):
        if number == 1:
            if wire != LENGTH_DELIMITED:
                raise ProtoError("a BytesList value that is no bytes")
            values.append(bytes(value))
    return values


def parse_feature(buf: bytes) -> Feature:
    decoders = {1: _bytes_values, 2: _floats, 3: _ints}
    values: Feature = []
    for number, wire, value in _fields(buf):
        if number in decoders:
            if wire != LENGTH_DELIMITED:
                raise ProtoError(f"Feature field {number} is not a message")
            values = decoders[number](value)  # a oneof: the last one set wins, as in protobuf
    return values


def _map(buf: bytes, parse_value) -> dict:
    """A map field's entries (field 1 of ``buf``), each a message {key = 1; value = 2}."""
    entries = {}
    for number, wire, entry in _fields(buf):
        if number != 1 or wire != LENGTH_DELIMITED:
            continue
        key, value = "", b""
        for part, part_wire, content in _fields(entry):
            if part_wire != LENGTH_DELIMITED:
                raise ProtoError("a map entry whose key or value is not length-delimited")
            if part == 1:
                key = bytes(content).decode("utf-8", "replace")
            elif part == 2:
                value = content
        entries[key] = parse_value(value)
    return entries


def _feature_list(buf: bytes) -> list[Feature]:
    return [parse_feature(value) for number, wire, value in _fields(buf) if number == 1 and wire == LENGTH_DELIMITED]


def parse_sequence_example(data: bytes) -> SequenceExample:
    """A serialized SequenceExample; ProtoError if the bytes are not one."""
    example = SequenceExample()
    for number, wire, value in _fields(data):
        if wire != LENGTH_DELIMITED:
            continue
        if number == 1:
            example.context.update(_map(value, parse_feature))
        elif number == 2:
            example.feature_lists.update(_map(value, _feature_list))
    return example
