"""eval_set@NAME: the trained mapper on an extra evaluation set (ESC-50, AudioCaps, any folder).

The set goes through the very functions of the main pipeline's stages (ingest, download, embed_audio,
embed_text) with the main params, so its features are made exactly as the training features were; then the
held-out metrics on every pair, and per official fold where the set has folds (ESC-50's 5; never a random split).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from a2i_core.audio.encoder import encoder_for
from a2i_core.core.distributed import SOLO
from a2i_core.core.files import write_json
from a2i_core.core.hub import model_identity
from a2i_core.core.params import Params
from a2i_core.mapper.evaluate import SET_HEADLINE, SUMMARY_KEYS, headline, mapper_metrics
from a2i_core.mapper.model import AudioToSD3Mapper
from a2i_core.mapper.pairs import Pairs, load_pairs_for
from a2i_core.pipeline.download import download
from a2i_core.pipeline.embed_audio import embed_audio
from a2i_core.pipeline.embed_text import embed_text
from a2i_core.pipeline.ingest import ingest

EVAL_SPLIT = "eval"


def set_metrics(mapper: AudioToSD3Mapper, pairs: Pairs, folds: pd.Series | None, w_cos: float,
                w_mse: float) -> dict:
    """Metrics on all pairs; with folds, per fold and their mean and standard deviation."""

    def metrics_of(part: Pairs) -> dict:
        return mapper_metrics(mapper, part, pairs.prompts, pairs.prompt_pooled, w_cos, w_mse)[0]

    report = metrics_of(pairs)
    if folds is not None:
        pairs.frame["split"] = [f"fold{folds[c]}" for c in pairs.frame["clip_id"]]
        per_fold = {name: metrics_of(pairs.subset(name)) for name in sorted(pairs.frame["split"].unique())}
        report["folds"] = per_fold
        for key in SUMMARY_KEYS:
            values = [m[key] for m in per_fold.values()]
            report[f"{key}_fold_mean"], report[f"{key}_fold_std"] = float(np.mean(values)), float(np.std(values))
    return report


def eval_set(params: Params, name: str, mapper_dir: Path, audio_encoder: Path, sd3: Path, out: Path, metrics: Path,
             report: Path) -> dict:
    """Candidates, audio, features and metrics of eval set ``name``; its work files go under ``out``, its headline
    numbers to ``metrics`` and every number (per fold too) to ``report``, which it returns."""
    spec = params.eval_sets[name]
    data = dataclasses.replace(params.data, source=spec.source, esc50=spec.esc50, audiocaps=spec.audiocaps,
                               folder=spec.folder, heldout_classes=[])
    candidates, audio, audio_features, text_features = (out / "candidates.parquet", out / "audio",
                                                        out / "features" / "audio", out / "features" / "text")
    mapper = AudioToSD3Mapper.from_pretrained(mapper_dir)
    # Refuse encoders the mapper never learnt from now, not after downloading and embedding the whole set.
    encoder_for(mapper.config.provenance, audio_encoder, params.audio_encoder.postprocess)
    mapper.config.provenance.check(str(sd3), diffusion_model=model_identity(sd3))
    frame = ingest(data, candidates, out / "data.json", split=EVAL_SPLIT)
    download(params.download, candidates, audio, out / "download.json")
    # The set's own audio, embedded by the local VGGish even where training imported AudioSet's released embeddings.
    embed_audio(dataclasses.replace(params.audio_encoder, release=None), audio, audio_encoder, audio_features, SOLO)
    # Whole sequences only serve render's true-prompt images, which eval sets do not draw; the embeddings are the same.
    embed_text(dataclasses.replace(params.diffusion, store_sequence=False), candidates, sd3, text_features, world=SOLO)
    pairs = load_pairs_for(mapper, candidates, audio_features, text_features)
    folds = frame.drop_duplicates("clip_id").set_index("clip_id")["fold"] if "fold" in frame else None
    full = {"set": name, "source": spec.source,
            **set_metrics(mapper, pairs, folds, params.train.w_cos, params.train.w_mse)}
    write_json(report, full)
    numbers = headline(full, SET_HEADLINE)
    # Under the set's name: `dvc exp show` then has a column `eval_sets.NAME.top1`, never a second `top1`.
    write_json(metrics, {"eval_sets": {name: numbers}})
    return full
