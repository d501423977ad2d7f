"""Extra evaluation sets (ESC-50, AudioCaps, any folder): the trained mapper on sounds from elsewhere.

One function per step, each calling the same code the main pipeline uses: candidates, download, VGGish,
SD3 text embeddings, then the held-out metrics on every pair, and per official fold where the set has folds
(ESC-50's 5 folds; never a random split).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from a2i_core import shards
from a2i_core.audio_features import embed_clips
from a2i_core.download import clip_sources, download_clips
from a2i_core.encoders import load_audio_encoder, sd3_source
from a2i_core.evaluate import SUMMARY_KEYS, mapper_metrics
from a2i_core.ingest import CANDIDATES_KIND, build_candidates, candidates_table
from a2i_core.mapper import AudioToSD3Mapper
from a2i_core.pairs import Pairs, load_pairs_for
from a2i_core.params import EvalSetParams, Params
from a2i_core.sd3 import load_sd3
from a2i_core.text import embed_prompts


def set_candidates(params: Params, eval_set: EvalSetParams, out: Path) -> pd.DataFrame:
    """The set's (clip, label, prompt) rows, with the main data's prompt template; every row is evaluated."""
    data = dataclasses.replace(params.data, source=eval_set.source, esc50=eval_set.esc50,
                               audiocaps=eval_set.audiocaps, folder=eval_set.folder, heldout_classes=[])
    frame, _ = build_candidates(data)
    frame["split"] = "eval"
    shards.write_table(candidates_table(frame), out / "candidates.parquet", CANDIDATES_KIND)
    return frame


def set_features(params: Params, mapper: AudioToSD3Mapper, frame: pd.DataFrame, out: Path,
                 device: torch.device) -> None:
    download_clips(frame, out / "audio", params.download)
    encoder = load_audio_encoder("models/vggish", mapper.config.provenance.get("postprocess") == "true")
    embed_clips(encoder, clip_sources(out / "audio"), out / "features" / "audio", params.audio_encoder.batch_size,
                params.audio_encoder.shard_rows, device,
                {"encoder_sha256": encoder.weights_sha256, "postprocess": mapper.config.provenance["postprocess"]})
    cfg = params.diffusion
    pipe = load_sd3("models/sd3", "text", device, use_t5=cfg.use_t5)
    embed_prompts(pipe, frame["prompt"].tolist(), out / "features" / "text", tokens=cfg.tokens,
                  max_sequence_length=cfg.max_sequence_length, batch_size=cfg.batch_size,
                  shard_rows=cfg.shard_rows, model=sd3_source("models/sd3")[0])


def set_metrics(mapper: AudioToSD3Mapper, pairs: Pairs, folds: pd.Series | None, w_cos: float,
                w_mse: float) -> dict:
    """Metrics on all pairs; with folds, per fold and their mean and standard deviation."""

    def metrics_of(part: Pairs) -> dict:
        return mapper_metrics(mapper, part, pairs.prompts, pairs.prompt_pooled, w_cos, w_mse)[0]

    report = metrics_of(pairs)
    if folds is not None:
        pairs.frame["split"] = [f"fold{folds[c]}" for c in pairs.frame["clip_id"]]
        per_fold = {name: metrics_of(pairs.split(name)) for name in sorted(pairs.frame["split"].unique())}
        report["folds"] = per_fold
        for key in SUMMARY_KEYS:
            values = [m[key] for m in per_fold.values()]
            report[f"{key}_fold_mean"], report[f"{key}_fold_std"] = float(np.mean(values)), float(np.std(values))
    return report


def evaluate_set(params: Params, name: str, device: torch.device) -> dict:
    out = Path("data/eval_sets") / name
    mapper = AudioToSD3Mapper.from_pretrained("models/mapper")
    frame = set_candidates(params, params.eval_sets[name], out)
    set_features(params, mapper, frame, out, device)
    pairs = load_pairs_for(mapper, out / "candidates.parquet", out / "features" / "audio", out / "features" / "text")
    folds = frame.drop_duplicates("clip_id").set_index("clip_id")["fold"] if "fold" in frame else None
    return {"set": name, "source": params.eval_sets[name].source,
            **set_metrics(mapper, pairs, folds, params.train.w_cos, params.train.w_mse)}
