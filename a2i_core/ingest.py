"""The ingest stage's logic: source metadata -> candidate (clip, label, prompt, split) rows."""

from __future__ import annotations

import hashlib

import pandas as pd
import pyarrow as pa

from a2i_core.errors import A2IError
from a2i_core.params import DataParams
from a2i_core.sources import synthetic

CANDIDATES_KIND = "candidates"
HELDOUT = "heldout"
SPLITS = ("train", "val", "test", HELDOUT)


def split_of(group: str, seed: int, val_fraction: float, test_fraction: float) -> str:
    """Stable split of a group id (a video, a recording): every clip of one group lands in the same split."""
    digest = hashlib.sha256(f"{seed}:{group}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def prompt_for(template: str, name: str) -> str:
    return template.format(name=name)


def build_candidates(data: DataParams) -> pd.DataFrame:
    """One row per (clip, label) pair: clip_id, group, label, prompt, split, plus the source's own columns."""
    if data.source == "synthetic":
        frame = synthetic_candidates(data)
    else:  # params validation admits only the sources above
        raise AssertionError(data.source)
    frame["split"] = [split_of(g, data.seed, data.val_fraction, data.test_fraction) for g in frame["group"]]
    if data.heldout_classes:
        unknown = sorted(set(data.heldout_classes) - set(frame["label"]))
        if unknown:
            raise A2IError(f"data.heldout_classes: {unknown} are not labels of this source")
        # Whole recordings: a clip that carries a held-out label never reaches training under another label.
        heldout_groups = set(frame.loc[frame["label"].isin(data.heldout_classes), "group"])
        frame.loc[frame["group"].isin(heldout_groups), "split"] = HELDOUT
    return frame.sort_values(["clip_id", "label"], ignore_index=True)


def synthetic_candidates(data: DataParams) -> pd.DataFrame:
    cfg = data.synthetic
    assert cfg is not None
    specs = synthetic.clip_specs(cfg.classes, cfg.clips_per_class, cfg.min_seconds, cfg.max_seconds, data.seed)
    rows = []
    for clip_id, spec in specs.items():
        rows.append({
            "clip_id": clip_id,
            "group": clip_id,  # every synthetic clip is its own recording
            "label": spec.label,
            "prompt": prompt_for(data.prompt_template, synthetic.SOUND_CLASSES[spec.label].name),
            "source": "synthetic",
            "seed": spec.seed,
            "seconds": spec.seconds,
            "gain_db": spec.gain_db,
            "snr_db": spec.snr_db,
        })
    return pd.DataFrame(rows)


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
