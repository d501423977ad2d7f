"""VGGish embeddings of audio clips, written shard by shard to Parquet.

Each row holds a clip's per-example embeddings (``frames``: n x 128, one per 0.96 s) and their mean
(``embedding``: 128). Clips are batched across files through the frontend and the network.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from tqdm import tqdm

from a2i_core import shards
from a2i_core.audio import AudioError, decode
from a2i_core.encoders import AudioEncoder
from a2i_core.vggish import LogMelFrontend

log = logging.getLogger(__name__)

AUDIO_KIND = "audio_features"


@torch.inference_mode()
def embed_waves(encoder: AudioEncoder, frontend: LogMelFrontend, waves: list[np.ndarray], batch_size: int,
                device: torch.device) -> list[np.ndarray]:
    """Per-clip (n_i, 128) VGGish embeddings for a list of 16 kHz waveforms, batched across clips."""
    examples = [frontend(torch.from_numpy(w).to(device)) for w in waves]  # each (n_i, 1, 96, 64)
    counts = [e.shape[0] for e in examples]
    stacked = torch.cat(examples)  # (sum n_i, 1, 96, 64)
    outputs = []
    for i in range(0, stacked.shape[0], batch_size):
        emb = encoder.model(stacked[i : i + batch_size])  # (b, 128)
        if encoder.postprocessor is not None:
            emb = encoder.postprocessor(emb)
        outputs.append(emb.float().cpu())
    return [a.numpy() for a in torch.cat(outputs).split(counts)]


def embed_clips(encoder: AudioEncoder, clips: Iterable[tuple[str, Path]], out_dir: str | Path, batch_size: int,
                shard_rows: int, device: torch.device, metadata: dict[str, str]) -> dict:
    """Decode, embed and write ``part-*.parquet``; a clip that cannot be decoded is logged and skipped."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clips = sorted(clips)
    encoder.model.to(device)
    if encoder.postprocessor is not None:
        encoder.postprocessor.to(device)
    frontend = LogMelFrontend().to(device)
    skipped: dict[str, str] = {}
    written = 0
    start = time.monotonic()
    bar = tqdm(total=len(clips), desc="embed_audio", unit="clip")
    for shard, first in enumerate(range(0, len(clips), shard_rows)):
        ids, frames = [], []
        chunk = clips[first : first + shard_rows]
        # Embed a few batches' worth of clips at a time so memory stays bounded inside a large shard.
        for i in range(0, len(chunk), batch_size):
            group_ids, waves = [], []
            for clip_id, path in chunk[i : i + batch_size]:
                try:
                    waves.append(decode(path))
                    group_ids.append(clip_id)
                except AudioError as err:
                    skipped[clip_id] = str(err)
                    log.warning("skipped %s: %s", clip_id, err)
            if waves:
                frames += embed_waves(encoder, frontend, waves, batch_size, device)
                ids += group_ids
            bar.update(len(chunk[i : i + batch_size]))
        if ids:
            table = pa.table({
                "clip_id": pa.array(ids, pa.string()),
                "n_frames": pa.array([f.shape[0] for f in frames], pa.int32()),
                "frames": shards.ragged_list(frames),
                "embedding": shards.fixed_list(np.stack([f.mean(axis=0) for f in frames])),
            })
            shards.write_table(table, shards.shard_path(out_dir, shard), AUDIO_KIND, metadata)
            written += len(ids)
    bar.close()
    seconds = time.monotonic() - start
    log.info("embedded %d clips in %.1f s (%.1f clips/s); skipped %d undecodable", written, seconds,
             written / max(seconds, 1e-9), len(skipped))
    return {"clips": written, "skipped": len(skipped), "seconds": round(seconds, 3)}


def load_audio_embeddings(directory: str | Path) -> tuple[list[str], np.ndarray, dict[str, str]]:
    """clip ids, their mean embeddings (n, 128), and the features' metadata (encoder, postprocess...)."""
    paths = shards.shard_paths(directory)
    table = shards.read_shards(directory, AUDIO_KIND, columns=["clip_id", "embedding"])
    return table["clip_id"].to_pylist(), shards.to_numpy(table["embedding"]), shards.table_metadata(paths[0])
