"""eval_set@NAME: the trained mapper on an extra evaluation set (ESC-50, AudioCaps, VGGSound, any folder).

The set goes through the very functions of the main pipeline's stages (ingest, download, embed_audio,
embed_text) with the main params, so its features are made exactly as the training features were; then the
held-out metrics on every pair, and per official fold where the set has folds (ESC-50's 5; never a random split).
A set of YouTube clips (AudioCaps, VGGSound) loses its rows from videos the mapper trained on (AudioSet's, say):
VGGSound's videos overlap AudioSet's, and a mapper is not to be scored on what it learnt. With
``eval_sets.NAME.images_per_class``, a few clips of each label are drawn in every row by the render stages'
functions and measured by image_eval's (AIC over the set's own label texts, IIS, FID, ... against the set's frames):
VGGSound's test split in the same table as the papers'.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from a2i_core.audio.encoder import encoder_for
from a2i_core.core import shards
from a2i_core.core.candidates import CANDIDATES_KIND, candidates_table, data_counts
from a2i_core.core.distributed import SOLO
from a2i_core.core.files import read_json, write_json, write_text
from a2i_core.core.hub import model_identity
from a2i_core.core.params import Params
from a2i_core.data.ingest import drop_leaked
from a2i_core.diffusion.prompt_embeddings import load_guidance, load_sequences
from a2i_core.mapper.artifact import MapperArtifact
from a2i_core.mapper.evaluate import SET_HEADLINE, SUMMARY_KEYS, headline, mapper_metrics
from a2i_core.mapper.model import AudioToSD3Mapper, predict
from a2i_core.mapper.pairs import Pairs, load_pairs_for, load_token_targets
from a2i_core.pipeline.download import download
from a2i_core.pipeline.embed_audio import embed_audio
from a2i_core.pipeline.embed_text import embed_text
from a2i_core.pipeline.image_eval import MAPPER, image_eval
from a2i_core.pipeline.ingest import ingest
from a2i_core.pipeline.render import mapper_rows, pick_clips, publish, reference_rows, render_staged

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


def training_videos(candidates: Path) -> pd.DataFrame:
    """The main pipeline's candidates, only what the leak check reads: split, and ytid where the source has videos
    (2 million AudioSet rows need not be read whole)."""
    names = pq.read_schema(candidates).names if candidates.is_file() else []  # none: read_table says it is missing
    return shards.read_table(candidates, CANDIDATES_KIND, columns=[c for c in ("split", "ytid") if c in names]) \
        .to_pandas()


def drop_training_videos(frame: pd.DataFrame, set_candidates: Path, counts: Path, training: Path) -> tuple[
        pd.DataFrame, dict | None]:
    """The set without its rows from the training clips' videos; its candidates and counts rewritten to match."""
    kept, leak = drop_leaked(frame, training_videos(training))
    if leak is not None and leak["rows"]:
        shards.write_table(candidates_table(kept), set_candidates, CANDIDATES_KIND)
        write_json(counts, {**read_json(counts), **data_counts(kept)})
    return kept, leak


def eval_set(params: Params, name: str, mapper_dir: Path, audio_encoder: Path, sd3: Path, clip: Path, out: Path,
             metrics: Path, report: Path, table: Path, candidates: Path) -> dict:
    """Candidates, audio, features and metrics of eval set ``name``; its work files go under ``out``, its headline
    numbers to ``metrics`` and every number (per fold too) to ``report``, which it returns. ``candidates`` is the
    main pipeline's table: the set's rows from videos of its train and val splits are dropped (``leak`` in the
    report: how many videos and rows; null where the sources cannot share a video). With images_per_class, the
    set's clips are drawn in every row and measured as image_eval measures them (``images`` in the report, the
    table in ``table``; without, ``table`` says so)."""
    spec = params.eval_sets[name]
    data = dataclasses.replace(params.data, source=spec.source, esc50=spec.esc50, audiocaps=spec.audiocaps,
                               vggsound=spec.vggsound, folder=spec.folder, heldout_classes=[])
    set_candidates, audio, audio_features, text_features = (out / "candidates.parquet", out / "audio",
                                                            out / "features" / "audio", out / "features" / "text")
    # Drawing needs the mapper's prompt bank too: the artifact then, loaded once.
    artifact = MapperArtifact.load(mapper_dir) if spec.images_per_class else None
    mapper = artifact.mapper if artifact is not None else AudioToSD3Mapper.from_pretrained(mapper_dir)
    # Refuse encoders the mapper never learnt from now, not after downloading and embedding the whole set.
    encoder_for(mapper.config.provenance, audio_encoder, params.audio_encoder.postprocess)
    mapper.config.provenance.check(str(sd3), diffusion_model=model_identity(sd3))
    frame = ingest(data, set_candidates, out / "data.json", split=EVAL_SPLIT)
    frame, leak = drop_training_videos(frame, set_candidates, out / "data.json", candidates)
    # Frames only where images are drawn: they are measured against nothing else.
    download(params.download if spec.images_per_class else dataclasses.replace(params.download, frames=False),
             set_candidates, audio, out / "download.json", frames=out / "frames")
    # The set's own audio, embedded by the local VGGish even where training imported AudioSet's released embeddings.
    embed_audio(dataclasses.replace(params.audio_encoder, release=None), audio, audio_encoder, audio_features, SOLO)
    # Whole sequences only serve the true prompt's images: without images they are not stored (the embeddings are the
    # same either way).
    store_sequence = params.diffusion.store_sequence and spec.images_per_class > 0
    embed_text(dataclasses.replace(params.diffusion, store_sequence=store_sequence), set_candidates, sd3,
               text_features, world=SOLO)
    pairs = load_pairs_for(mapper, set_candidates, audio_features, text_features)
    folds = frame.drop_duplicates("clip_id").set_index("clip_id")["fold"] if "fold" in frame else None
    full = {"set": name, "source": spec.source, "leak": leak,
            **set_metrics(mapper, pairs, folds, params.train.w_cos, params.train.w_mse)}
    numbers = headline(full, SET_HEADLINE)
    if spec.images_per_class:
        full["images"] = set_images(params, spec.images_per_class, artifact, pairs, text_features, sd3, clip, out,
                                    table)
        numbers["aic"] = full["images"]["rows"][MAPPER]["aic"]
    else:
        write_text(table, f"No images of eval set {name} were drawn (eval_sets.{name}.images_per_class: 0).\n")
    write_json(report, full)
    # Under the set's name: `dvc exp show` then has a column `eval_sets.NAME.top1`, never a second `top1`.
    write_json(metrics, {"eval_sets": {name: numbers}})
    return full


def set_images(params: Params, per_class: int, artifact: MapperArtifact, pairs: Pairs, text_features: Path, sd3: Path,
               clip: Path, out: Path, table: Path) -> dict:
    """The first ``per_class`` clips of each label drawn in every row by the render stages' functions (the mean
    embedding: the mean of the mapper's prompt bank, the training pairs being the main pipeline's), and measured by
    image_eval's against the set's frames; its report."""
    mapper = artifact.mapper
    picked = pick_clips(pairs, per_class, splits=(EVAL_SPLIT,))
    clips = picked.frame
    guidance = load_guidance(text_features)  # (P,), (L, D)
    full = load_sequences(text_features, clips["prompt"].tolist())  # None unless diffusion.store_sequence
    heads = None if full is not None else load_token_targets(text_features, clips["prompt"].tolist())
    pred_pooled, pred_tokens = predict(mapper, *picked.inputs(mapper.config.input))
    bank = (artifact.prompt_pooled, artifact.prompt_sequences)
    mean_pooled = artifact.prompt_pooled.mean(axis=0, keepdims=True)  # (1, P)
    rows = [*reference_rows(params.render, picked.pooled, full, heads, mean_pooled, guidance[1], *bank),
            *mapper_rows(params.render, pred_pooled, pred_tokens, guidance[1], *bank)]
    images, index = out / "images", out / "render_index.csv"
    done = render_staged(params.render, clips, rows, sd3, guidance, images, SOLO)
    publish(done, images, index)
    measured = image_eval(params.evaluate, [(index, images)], text_features, clip, out / "frames",
                          out / "image_eval.json", out / "image_eval_report.json", table, out / "image_scores.csv")
    return {**measured, "baseline_mean": "the mean of the mapper's prompt bank (the training pairs are not the set's)"}
