"""TFRecord files of SequenceExamples written as TensorFlow writes them (numeric lists packed): the test and benchmark
side of a2i_core.audio.tfrecord, which only reads."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from a2i_core.audio.tfrecord import FOOTER, LENGTH_DELIMITED, Feature, SequenceExample, crc32c, masked


def frame_record(data: bytes) -> bytes:
    """One record as a TFRecord file stores it."""
    length = struct.pack("<Q", len(data))
    return length + FOOTER.pack(masked(crc32c(length))) + data + FOOTER.pack(masked(crc32c(data)))


def write_records(path: str | Path, records: Iterable[bytes]) -> None:
    """A TFRecord file of ``records`` (serialized messages), as TensorFlow's TFRecordWriter writes it."""
    with open(path, "wb") as f:
        for data in records:
            f.write(frame_record(data))


def varint_bytes(value: int) -> bytes:
    value &= (1 << 64) - 1  # a negative int64 is its two's complement, ten bytes long
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def message_field(number: int, payload: bytes) -> bytes:
    return varint_bytes(number << 3 | LENGTH_DELIMITED) + varint_bytes(len(payload)) + payload


def serialize_feature(values: Feature) -> bytes:
    """A Feature message; the list's type picks the kind (an empty list becomes an empty BytesList)."""
    first = values[0] if values else b""
    if isinstance(first, (bytes, bytearray)):
        return message_field(1, b"".join(message_field(1, bytes(v)) for v in values))
    if isinstance(first, (float, np.floating)):
        return message_field(2, message_field(1, struct.pack(f"<{len(values)}f", *values)))
    if isinstance(first, (int, np.integer)):
        return message_field(3, message_field(1, b"".join(varint_bytes(int(v)) for v in values)))
    raise TypeError(f"a Feature holds bytes, floats or ints, not {type(first).__name__}")


def map_bytes(entries: dict[str, bytes]) -> bytes:
    return b"".join(message_field(1, message_field(1, key.encode()) + message_field(2, value))
                    for key, value in entries.items())


def serialize_sequence_example(example: SequenceExample) -> bytes:
    context = map_bytes({k: serialize_feature(v) for k, v in example.context.items()})
    lists = map_bytes({k: b"".join(message_field(1, serialize_feature(f)) for f in features)
                        for k, features in example.feature_lists.items()})
    return message_field(1, context) + message_field(2, lists)
