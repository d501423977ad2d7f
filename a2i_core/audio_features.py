"""VGGish embeddings of audio clips, written shard by shard to Parquet.

Each row holds a clip's per-example embeddings (``frames``: n x 128, one per 0.96 s) and their mean
(``embedding``: 128). Clips are batched across files through the frontend and the network.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import torch
from tqdm import tqdm

from a2i_core import provenance, shards
from a2i_core.audio import AudioError, decode
from a2i_core.distributed import SOLO, World
from a2i_core.packs import PackedClip
from a2i_core.vggish import EMBEDDING_DIM, LogMelFrontend

if TYPE_CHECKING:
    from a2i_core.audio_encoder import AudioEncoder

log = logging.getLogger(__name__)

AUDIO_KIND = "audio_features"


@torch.inference_mode()
def embed_waves(encoder: AudioEncoder, frontend: LogMelFrontend, waves: list[np.ndarray], batch_size: int,
                device: torch.device) -> list[np.ndarray]:
    """Per-clip (n_i, 128) VGGish embeddings for a list of 16 kHz waveforms, batched across clips."""
    stacked, counts = frontend.batch([torch.from_numpy(w).to(device) for w in waves])  # (sum n_i, 1, 96, 64)
    stacked = stacked.contiguous(memory_format=torch.channels_last)  # the conv kernels' fast layout on CPU and GPU
    outputs = []
    for i in range(0, stacked.shape[0], batch_size):
        emb = encoder.model(stacked[i : i + batch_size])  # (b, 128)
        if encoder.postprocessor is not None:
            emb = encoder.postprocessor(emb)
        outputs.append(emb.float().cpu())
    return [a.numpy() for a in torch.cat(outputs).split(counts)]


def inputs_digest(chunk: list[tuple[str, Path | PackedClip]], settings: dict[str, str]) -> str:
    """What a shard was computed from: its clips' ids and bytes, and every setting that changes the numbers."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for clip_id, path in chunk:
        digest.update(clip_id.encode() + b"\0")
        try:
            if isinstance(path, PackedClip):
                digest.update(hashlib.sha256(path.read()).digest())
            else:
                with open(path, "rb") as f:
                    digest.update(hashlib.file_digest(f, "sha256").digest())
        except (OSError, IndexError):
            digest.update(b"unreadable")
    return digest.hexdigest()


def decoded(clips: list[tuple[str, Path | PackedClip]], pool: ThreadPoolExecutor,
            ahead: int) -> Iterator[tuple[str, np.ndarray | AudioError]]:
    """(clip_id, waveform or the decode error) in order, decoding up to ``ahead`` clips in the background."""

    def safe_decode(path: Path | PackedClip) -> np.ndarray | AudioError:
        try:
            return decode(path)
        except AudioError as err:
            return err

    pending: deque[tuple[str, Future]] = deque()
    for clip_id, path in clips:
        pending.append((clip_id, pool.submit(safe_decode, path)))
        if len(pending) > ahead:
            first_id, future = pending.popleft()
            yield first_id, future.result()
    while pending:
        first_id, future = pending.popleft()
        yield first_id, future.result()


def place_encoder(encoder: AudioEncoder, device: torch.device) -> LogMelFrontend:
    """Move VGGish (channels-last, faster convolutions) and its postprocessor to ``device``; the frontend to use."""
    encoder.model.to(device, memory_format=torch.channels_last)
    if encoder.postprocessor is not None:
        encoder.postprocessor.to(device)
    return LogMelFrontend().to(device)


def embed_clips(encoder: AudioEncoder, clips: Iterable[tuple[str, Path | PackedClip]], out_dir: str | Path,
                batch_size: int, shard_rows: int, device: torch.device, decode_workers: int = 2,
                world: World = SOLO) -> dict:
    """Decode, embed and write ``part-*.parquet``, shard by shard, resuming where a previous run stopped.

    Clips (a file path or a PackedClip each) are cut, in the given order, into shards of ``shard_rows``; a
    shard already on disk whose recorded inputs digest matches is kept, so an interrupted run recomputes only
    unfinished shards. Every shard records the encoder's provenance. A clip that cannot be decoded is logged and
    skipped. Memory is bounded by one shard,
    whatever the number of clips. Under torchrun each process takes every ``world.size``-th shard; the shards
    are the same whatever the number of processes.
    """
    out_dir = Path(out_dir)
    metadata = provenance.to_metadata(encoder.provenance())
    clips = list(clips)  # in the caller's (deterministic) order: packed clips stay next to their pack-mates
    plan = [clips[i : i + shard_rows] for i in range(0, len(clips), shard_rows)]
    if world.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in out_dir.glob(".part-*.tmp"):  # left by a killed run
            stale.unlink()
        for extra in shards.shard_paths(out_dir, missing_ok=True)[len(plan):]:
            extra.unlink()
    world.barrier()
    mine = world.mine(plan)
    frontend = place_encoder(encoder, device)
    skipped: dict[str, str] = {}
    written = kept = 0
    start = time.monotonic()
    bar = tqdm(total=sum(len(c) for _, c in mine), desc=f"embed_audio[{world.rank}]", unit="clip",
               position=world.rank)
    pool = ThreadPoolExecutor(max_workers=decode_workers)  # ffmpeg runs in subprocesses: threads suffice
    try:
        for shard, chunk in mine:
            path = shards.shard_path(out_dir, shard)
            digest = inputs_digest(chunk, metadata)
            if path.is_file() and shards.table_metadata(path).get("inputs_sha256") == digest:
                kept += 1
                bar.update(len(chunk))
                continue
            ids, frames = [], []
            stream = decoded(chunk, pool, ahead=2 * batch_size)
            # Embed a batch of clips at a time (decoding the next ones meanwhile): memory stays bounded in a shard.
            for i in range(0, len(chunk), batch_size):
                group_ids, waves = [], []
                for clip_id, wave in itertools.islice(stream, batch_size):
                    if isinstance(wave, AudioError):
                        skipped[clip_id] = str(wave)
                        log.warning("skipped %s: %s", clip_id, wave)
                    else:
                        waves.append(wave)
                        group_ids.append(clip_id)
                if waves:
                    frames += embed_waves(encoder, frontend, waves, batch_size, device)
                    ids += group_ids
                bar.update(len(chunk[i : i + batch_size]))
            table = pa.table({
                "clip_id": pa.array(ids, pa.string()),
                "n_frames": pa.array([f.shape[0] for f in frames], pa.int32()),
                "frames": shards.ragged_list(frames, EMBEDDING_DIM),
                "embedding": shards.fixed_list(clip_means(frames)),
            })
            shards.write_table(table, path, AUDIO_KIND, {**metadata, "inputs_sha256": digest})
            written += len(ids)
    finally:
        bar.close()
        pool.shutdown(cancel_futures=True)
    seconds = time.monotonic() - start
    parts = world.gather((written, len(skipped), kept))  # also waits for every process's shards
    written, n_skipped, kept = (sum(p[i] for p in parts) for i in range(3))
    if kept and world.is_main:
        log.info("%d of %d shards were already complete with the same inputs: kept, not recomputed", kept, len(plan))
    if world.is_main:
        log.info("embedded %d clips in %.1f s (%.1f clips/s, %d processes); skipped %d undecodable", written,
                 seconds, written / max(seconds, 1e-9), world.size, n_skipped)
    return {"clips": written, "skipped": n_skipped, "shards_kept": kept, "seconds": round(seconds, 3)}


def clip_means(frames: list[np.ndarray]) -> np.ndarray:
    """Ragged per-clip frame embeddings [(n_i, 128)] -> one mean embedding per clip (n, 128)."""
    return np.stack([f.mean(axis=0) for f in frames]) if frames else np.zeros((0, EMBEDDING_DIM), np.float32)


def load_audio_embeddings(directory: str | Path) -> tuple[list[str], np.ndarray, dict[str, Any]]:
    """clip ids, their mean embeddings (n, 128), and the features' part of a provenance record."""
    paths = shards.shard_paths(directory)
    table = shards.read_shards(directory, AUDIO_KIND, columns=["clip_id", "embedding"])
    parts = [provenance.from_metadata(shards.table_metadata(p), str(p)) for p in paths]
    if any(part != parts[0] for part in parts):  # shards kept from a run with other settings
        raise provenance.ProvenanceError(f"{directory}: shards made by different encoders or settings")
    return table["clip_id"].to_pylist(), shards.to_numpy(table["embedding"]), parts[0]
