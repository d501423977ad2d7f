"""VGGish embeddings of audio clips, written shard by shard to Parquet.

Each row holds a clip's per-example embeddings (``frames``: n x 128, one per 0.96 s) and their mean
(``embedding``: 128). Clips are batched across files through the frontend and the network; a recording longer
than a window is streamed through them a window at a time, so memory does not grow with its length.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import itertools
import json
import logging
import os
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
from a2i_core.audio import SAMPLE_RATE, AudioError, decode, decode_stream
from a2i_core.distributed import SOLO, World
from a2i_core.packs import PackedClip
from a2i_core.vggish import EMBEDDING_DIM, EXAMPLE_FRAMES, HOP, MIN_SAMPLES, LogMelFrontend

if TYPE_CHECKING:
    from a2i_core.audio_encoder import AudioEncoder

log = logging.getLogger(__name__)

AUDIO_KIND = "audio_features"
EXAMPLE_STEP = EXAMPLE_FRAMES * HOP  # 15360 samples: examples start this far apart and do not overlap
# Beyond its last hop, an example's last frame reaches WINDOW - HOP = 240 samples further: the next window needs them.
EXAMPLE_OVERLAP = MIN_SAMPLES - EXAMPLE_STEP
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter, from malloc.h


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


def window_samples(window_seconds: float) -> int:
    """The longest waveform ``embed_path`` embeds at once: a whole number of examples (at least one)."""
    examples = max(1, round(window_seconds * SAMPLE_RATE / EXAMPLE_STEP))
    return examples * EXAMPLE_STEP + EXAMPLE_OVERLAP


@functools.cache
def fix_mmap_threshold() -> bool:
    """On glibc, keep malloc's mmap threshold at its default 128 KiB for good; True if it was set.

    glibc raises the threshold to the size of any mmapped block that is freed (up to 32 MiB), and then serves the
    window-sized blocks of the log-mel and the network from its heap, where window after window they fragment:
    streaming an hour measured a peak 1.3-1.7x that of a minute, and still rising. A fixed threshold hands every
    large block back to the system when it is freed: flat peaks (1.01x), the same wall time, a little more time in
    the kernel. Process-wide, as malloc's settings are.
    """
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False
        return bool(ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, 128 * 1024))
    except (ValueError, OSError, AttributeError):  # not glibc: its allocator keeps its own policy
        return False


@torch.inference_mode()
def embed_path(encoder: AudioEncoder, frontend: LogMelFrontend, path: str | Path, batch_size: int,
               device: torch.device, window_seconds: float = 60.0) -> tuple[np.ndarray, int, float]:
    """A file's (n, 128) VGGish embeddings, its number of samples and its RMS, holding one window of audio.

    The same embeddings as ``embed_waves`` of the whole decoded file: examples do not overlap, so each window
    covers whole examples and the next one starts where they end, keeping the 240 samples the last frame reads
    past its hop. A recording shorter than one example is padded as the frontend pads it.
    """
    fix_mmap_threshold()
    span = window_samples(window_seconds)
    advance = span - EXAMPLE_OVERLAP  # where the examples of a full window end, and the next window starts
    window = np.empty(span, np.float32)  # reused: the only audio held, whatever the recording's length
    held = total = 0
    square_sum = 0.0
    outputs: list[np.ndarray] = []
    with contextlib.closing(decode_stream(path)) as stream:  # an error while embedding must not leave ffmpeg running
        for chunk in stream:
            total += chunk.size
            wide = chunk.astype(np.float64)  # float32 sums of squares lose digits over an hour of audio
            square_sum += float(np.dot(wide, wide))
            used = 0
            while used < chunk.size:
                take = min(span - held, chunk.size - used)
                window[held : held + take] = chunk[used : used + take]
                held, used = held + take, used + take
                if held == span:
                    outputs += embed_waves(encoder, frontend, [window], batch_size, device)  # (span examples, 128)
                    window[:EXAMPLE_OVERLAP] = window[advance:]
                    held = EXAMPLE_OVERLAP
    # Nothing embedded yet: this is the whole recording, padded by the frontend if shorter than an example.
    # Otherwise a tail shorter than an example holds no whole example: the frontend drops it too.
    if not outputs or held >= MIN_SAMPLES:
        outputs += embed_waves(encoder, frontend, [window[:held]], batch_size, device)
    return np.concatenate(outputs), total, float(np.sqrt(square_sum / total))


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


def decode_short(path: Path | PackedClip, max_samples: int) -> np.ndarray | None:
    """``decode(path)``, or None as soon as the file proves longer than ``max_samples`` (ffmpeg is then stopped)."""
    if isinstance(path, PackedClip):  # packs hold 10 s clips, read whole from the pack
        return decode(path)
    chunks, held = [], 0
    stream = decode_stream(path)
    try:
        for chunk in stream:
            held += chunk.size
            if held > max_samples:
                return None
            chunks.append(chunk)
    finally:
        stream.close()
    return np.concatenate(chunks)


def decoded(clips: list[tuple[str, Path | PackedClip]], pool: ThreadPoolExecutor, ahead: int,
            max_samples: int) -> Iterator[tuple[str, np.ndarray | AudioError | Path]]:
    """(clip_id, waveform or the decode error) in order, decoding up to ``ahead`` clips in the background.

    A file longer than ``max_samples`` comes back as its path, to be streamed: the queue holds only short clips.
    """

    def safe_decode(path: Path | PackedClip) -> np.ndarray | AudioError | Path:
        try:
            wave = decode_short(path, max_samples)
        except AudioError as err:
            return err
        return path if wave is None else wave

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
                world: World = SOLO, window_seconds: float = 60.0) -> dict:
    """Decode, embed and write ``part-*.parquet``, shard by shard, resuming where a previous run stopped.

    Clips (a file path or a PackedClip each) are cut, in the given order, into shards of ``shard_rows``; a
    shard already on disk whose recorded inputs digest matches is kept, so an interrupted run recomputes only
    unfinished shards. Every shard records the encoder's provenance. A clip that cannot be decoded is logged and
    skipped. Clips are batched across files; a file longer than ``window_seconds`` is streamed through
    ``embed_path`` on its own. Memory is bounded by one shard's embeddings and about ``2 * batch_size`` windows of
    audio, whatever the number of clips and their lengths. Under torchrun each process takes every
    ``world.size``-th shard; the shards are the same whatever the number of processes.
    """
    out_dir = Path(out_dir)
    metadata = provenance.to_metadata(encoder.provenance())
    clips = list(clips)  # in the caller's (deterministic) order: packed clips stay next to their pack-mates
    plan = [clips[i : i + shard_rows] for i in range(0, len(clips), shard_rows)]
    if world.is_main:
        shards.prepare_shard_dir(out_dir, len(plan))
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
            stream = decoded(chunk, pool, ahead=2 * batch_size, max_samples=window_samples(window_seconds))
            # Embed a batch of clips at a time (decoding the next ones meanwhile): memory stays bounded in a shard.
            for i in range(0, len(chunk), batch_size):
                group: list[tuple[str, np.ndarray | Path]] = []
                for clip_id, wave in itertools.islice(stream, batch_size):
                    if isinstance(wave, AudioError):
                        skipped[clip_id] = str(wave)
                        log.warning("skipped %s: %s", clip_id, wave)
                    else:
                        group.append((clip_id, wave))
                waves = [w for _, w in group if isinstance(w, np.ndarray)]
                short = iter(embed_waves(encoder, frontend, waves, batch_size, device) if waves else [])
                for clip_id, wave in group:  # in the shard's order, long files streamed where they fall
                    if isinstance(wave, np.ndarray):
                        frames.append(next(short))
                    else:
                        try:
                            frames.append(embed_path(encoder, frontend, wave, batch_size, device, window_seconds)[0])
                        except AudioError as err:  # ffmpeg failed past the first window
                            skipped[clip_id] = str(err)
                            log.warning("skipped %s: %s", clip_id, err)
                            continue
                    ids.append(clip_id)
                bar.update(len(chunk[i : i + batch_size]))
            write_audio_shard(path, ids, frames, {**metadata, "inputs_sha256": digest})
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


def write_audio_shard(path: Path, ids: list[str], frames: list[np.ndarray], metadata: dict[str, str]) -> None:
    """One shard of audio features, written atomically: each clip's frames (n_i, 128) and their mean, as float32,
    with ``metadata`` (provenance, what it was computed from)."""
    table = pa.table({
        "clip_id": pa.array(ids, pa.string()),
        "n_frames": pa.array([f.shape[0] for f in frames], pa.int32()),
        "frames": shards.ragged_list(frames, EMBEDDING_DIM),
        "embedding": shards.fixed_list(clip_means(frames)),
    })
    shards.write_table(table, path, AUDIO_KIND, metadata)


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
