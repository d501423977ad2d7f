"""Audio embeddings of clips (VGGish, CLAP or AST: ``a2i_core.audio.encoder``), written shard by shard to Parquet.

Each row holds a clip's per-window embeddings (``frames``: n x D; VGGish: one per 0.96 s example, D = 128; CLAP: one
per 10 s, AST: one per 10.24 s) and their mean (``embedding``: D). Clips are batched across files through the
frontend and the network; a recording longer than a streaming window is streamed through them a window at a time,
so memory does not grow with its length.
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
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import torch
from tqdm import tqdm

from a2i_core.core import provenance, shards
from a2i_core.core.audio_io import AudioError, decode, decode_stream
from a2i_core.core.distributed import SOLO, World
from a2i_core.core.packs import PackedClip

if TYPE_CHECKING:
    from torch import nn

    from a2i_core.audio.encoder import AudioEncoder

log = logging.getLogger(__name__)

AUDIO_KIND = "audio_features"
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter, from malloc.h


@torch.inference_mode()
def embed_waves(encoder: AudioEncoder, frontend: nn.Module, waves: list[np.ndarray], batch_size: int,
                device: torch.device) -> list[np.ndarray]:
    """Per-clip (n_i, D) embeddings for a list of waveforms at the encoder's sample rate, batched across clips
    (``batch_size`` windows a forward pass)."""
    stacked, counts = frontend.batch([torch.from_numpy(w).to(device) for w in waves])  # (sum n_i, ...) model inputs
    outputs = [encoder.embed(stacked[i : i + batch_size]).float().cpu()  # (b, D)
               for i in range(0, stacked.shape[0], batch_size)]
    return [a.numpy() for a in torch.cat(outputs).split(counts)]


def window_samples(encoder: AudioEncoder, window_seconds: float) -> int:
    """The longest waveform ``embed_path`` embeds at once: a whole number of the encoder's windows (at least one)."""
    windows = max(1, round(window_seconds * encoder.sample_rate / encoder.step))
    return windows * encoder.step + encoder.overlap


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
def embed_path(encoder: AudioEncoder, frontend: nn.Module, path: str | Path, batch_size: int,
               device: torch.device, window_seconds: float = 60.0, max_samples: int | None = None,
               progress: Callable[[int], None] | None = None,
               levels: list[np.ndarray] | None = None, channel: int | None = None) -> tuple[np.ndarray, int, float]:
    """A file's (n, D) embeddings, its number of samples and its RMS, holding one streaming window of audio.

    The same embeddings as ``embed_waves`` of the whole decoded file: the encoder's windows start ``step`` apart,
    so each streaming window covers whole encoder windows and the next one starts where they end, keeping the
    ``overlap`` samples the last one reads past its step (VGGish, AST: 240). A recording shorter than one window is
    padded as the frontend pads it.

    With ``max_samples``, only the first ``max_samples`` are heard (embedded and in the RMS): decoding stops (ffmpeg
    is killed) with the chunk that passes them, so a header claiming days of audio costs at most the cap. The count
    returned is then of the samples decoded, which is more than ``max_samples`` exactly when the recording is
    longer. ``progress`` is called with the samples decoded so far after each decoded chunk. Given ``levels``, each
    embedded span appends its windows' levels in dBFS (``window_levels``): one per embedding row. Given ``channel``
    (0 left, 1 right), that channel of the file's stereo form is heard instead of the mono mix (``decode_stream``).
    """
    fix_mmap_threshold()
    span = window_samples(encoder, window_seconds)
    overlap = encoder.overlap
    advance = span - overlap  # where the windows of a full span end, and the next span starts
    window = np.empty(span, np.float32)  # reused: the only audio held, whatever the recording's length
    held = total = 0
    square_sum = 0.0
    outputs: list[np.ndarray] = []
    # An error while embedding must not leave ffmpeg running.
    with contextlib.closing(decode_stream(path, encoder.sample_rate, channel=channel)) as stream:
        for chunk in stream:
            total += chunk.size
            if progress is not None:
                progress(total)
            past = 0 if max_samples is None else max(0, total - max_samples)
            heard = chunk[: chunk.size - past]
            wide = heard.astype(np.float64)  # float32 sums of squares lose digits over an hour of audio
            square_sum += float(np.dot(wide, wide))
            used = 0
            while used < heard.size:
                take = min(span - held, heard.size - used)
                window[held : held + take] = heard[used : used + take]
                held, used = held + take, used + take
                if held == span:
                    outputs += embed_waves(encoder, frontend, [window], batch_size, device)  # (windows, D)
                    if levels is not None:
                        levels.append(window_levels(encoder, window, len(outputs[-1])))
                    window[:overlap] = window[advance:]
                    held = overlap
            if past:
                break  # closing the stream stops ffmpeg: nothing further is decoded
    # Nothing embedded yet: this is the whole recording, padded by the frontend if shorter than a window.
    # Otherwise the tail makes a window only by the encoder's rule, as the frontend decides for a whole file.
    if not outputs or encoder.keeps_tail(held):
        outputs += embed_waves(encoder, frontend, [window[:held]], batch_size, device)
        if levels is not None:
            levels.append(window_levels(encoder, window[:held], len(outputs[-1])))
    heard_samples = total if max_samples is None else min(total, max_samples)
    return np.concatenate(outputs), total, float(np.sqrt(square_sum / max(heard_samples, 1)))


def window_levels(encoder: AudioEncoder, wave: np.ndarray, count: int) -> np.ndarray:
    """The level in dBFS of each of the ``count`` encoder windows of ``wave`` (window k reads from k * step,
    ``step + overlap`` samples; a padded short clip's one window, what it holds): silence is -inf's neighbour, -200."""
    length = encoder.step + encoder.overlap
    out = np.empty(count, np.float32)  # (count,)
    for k in range(count):
        part = wave[k * encoder.step : k * encoder.step + length].astype(np.float64)
        power = float(np.dot(part, part)) / max(part.size, 1)
        out[k] = 10 * np.log10(max(power, 1e-20))
    return out


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


def decode_short(path: Path | PackedClip, max_samples: int, sample_rate: int) -> np.ndarray | None:
    """``decode(path, sample_rate)``, or None as soon as the file proves longer than ``max_samples`` (ffmpeg is then
    stopped)."""
    if isinstance(path, PackedClip):  # packs hold 10 s clips, read whole from the pack
        return decode(path, sample_rate)
    chunks, held = [], 0
    stream = decode_stream(path, sample_rate)
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
            max_samples: int, sample_rate: int) -> Iterator[tuple[str, np.ndarray | AudioError | Path]]:
    """(clip_id, waveform or the decode error) in order, decoding up to ``ahead`` clips in the background.

    A file longer than ``max_samples`` comes back as its path, to be streamed: the queue holds only short clips.
    """

    def safe_decode(path: Path | PackedClip) -> np.ndarray | AudioError | Path:
        try:
            wave = decode_short(path, max_samples, sample_rate)
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
    frontend = encoder.place(device)
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
            stream = decoded(chunk, pool, ahead=2 * batch_size, max_samples=window_samples(encoder, window_seconds),
                             sample_rate=encoder.sample_rate)
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
            write_audio_shard(path, ids, frames, encoder.dim, {**metadata, "inputs_sha256": digest})
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


def write_audio_shard(path: Path, ids: list[str], frames: list[np.ndarray], dim: int,
                      metadata: dict[str, str]) -> None:
    """One shard of audio features, written atomically: each clip's frames (n_i, dim) and their mean, as float32,
    with ``metadata`` (provenance, what it was computed from)."""
    table = pa.table({
        "clip_id": pa.array(ids, pa.string()),
        "n_frames": pa.array([f.shape[0] for f in frames], pa.int32()),
        "frames": shards.ragged_list(frames, dim),
        "embedding": shards.fixed_list(clip_means(frames, dim)),
    })
    shards.write_table(table, path, AUDIO_KIND, metadata)


def clip_means(frames: list[np.ndarray], dim: int) -> np.ndarray:
    """Ragged per-clip frame embeddings [(n_i, dim)] -> one mean embedding per clip (n, dim)."""
    return np.stack([f.mean(axis=0) for f in frames]) if frames else np.zeros((0, dim), np.float32)


def load_audio_embeddings(directory: str | Path) -> tuple[list[str], np.ndarray, dict[str, Any]]:
    """clip ids, their mean embeddings (n, D), and the features' part of a provenance record."""
    paths = shards.shard_paths(directory)
    table = shards.read_shards(directory, AUDIO_KIND, columns=["clip_id", "embedding"])
    parts = [provenance.from_metadata(shards.table_metadata(p), str(p)) for p in paths]
    if any(part != parts[0] for part in parts):  # shards kept from a run with other settings
        raise provenance.ProvenanceError(f"{directory}: shards made by different encoders or settings")
    return table["clip_id"].to_pylist(), shards.to_numpy(table["embedding"]), parts[0]
