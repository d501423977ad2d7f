"""The candidates table: one row per (clip, label) pair with its prompt and data split.

Its kind, the names of the data splits, and how a recording is assigned its split; ``ingest`` writes it, the
stages after it read it. Knows nothing of the sources.
"""

from __future__ import annotations

import hashlib

import pandas as pd
import pyarrow as pa

CANDIDATES_KIND = "candidates"
HELDOUT = "heldout"
SPLITS = ("train", "val", "test", HELDOUT)
RELEASED_SOURCE = "audioset"  # the source whose segments AudioSet's released embeddings (audio_encoder.release) cover


def assign_split(group: str, seed: int, val_fraction: float, test_fraction: float) -> str:
    """Stable split of a group id (a video, a recording): every clip of one group lands in the same split."""
    digest = hashlib.sha256(f"{seed}:{group}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def candidates_table(frame: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame, preserve_index=False)


def data_counts(frame: pd.DataFrame) -> dict:
    """What metrics/data.json reports: clips, pairs, labels, prompts and pairs per split and per label."""
    return {
        "source": str(frame["source"].iloc[0]) if len(frame) else None,
        "clips": int(frame["clip_id"].nunique()),
        "pairs": int(len(frame)),
        "labels": int(frame["label"].nunique()),
        "prompts": int(frame["prompt"].nunique()),
        "pairs_per_split": {s: int((frame["split"] == s).sum()) for s in SPLITS},
        "pairs_per_label": {str(k): int(v) for k, v in frame["label"].value_counts().sort_index().items()},
    }
