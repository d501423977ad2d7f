"""label_head: a multi-label classifier over the mapper's prompt bank (``a2i_core.layers.head``), trained on every
train-split clip's mean embedding (targets: all of the clip's prompts) and on ``layers.head.mixtures`` seeded
two-source mixtures of single-label training clips (targets: both prompts), embedded by the audio encoder the mapper
learnt from. Measured on the val split: top-1 of single clips, recall@2 of 0 dB mixtures of val clips."""

from __future__ import annotations

import functools
import logging
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from a2i_core.audio.encoder import AudioEncoder, encoder_for
from a2i_core.audio.features import embed_waves, load_audio_embeddings
from a2i_core.core.audio_io import decode
from a2i_core.core.devices import resolve_device
from a2i_core.core.errors import A2IError, first_line
from a2i_core.core.files import write_json
from a2i_core.core.manifest import clip_sources
from a2i_core.core.packs import PackedClip
from a2i_core.core.params import LabelHeadParams
from a2i_core.layers.answer import recall_at_2
from a2i_core.layers.head import LabelHead, audio_part, fit_head
from a2i_core.layers.mixtures import training_mixtures
from a2i_core.mapper.artifact import MapperArtifact

log = logging.getLogger(__name__)
VAL_MIXTURES = 32  # 0 dB mixtures of val clips behind val_recall_at_2
EMBED_MIXTURES = 16  # mixtures embedded in one call: the work in flight
DECODE_CACHE_BYTES = 256 << 20  # decoded clips kept for the next draws: ~400 clips of 10 s at 16 kHz


class Labels:
    """Each clip's split and prompts of the bank (indices into it), from the candidates table."""

    def __init__(self, candidates: Path, prompts: list[str]) -> None:
        table = pd.read_parquet(candidates, columns=["clip_id", "prompt", "split"])
        index = {p: k for k, p in enumerate(prompts)}
        self.split = dict(zip(table["clip_id"], table["split"], strict=True))
        self.labels: dict[str, set[int]] = {c: set() for c in self.split}
        for clip_id, prompt in zip(table["clip_id"], table["prompt"], strict=True):
            if prompt in index:  # a prompt outside the bank is no target: the head answers over the bank
                self.labels[clip_id].add(index[prompt])

    def clips(self, split: str) -> list[str]:
        """The split's clips with at least one prompt of the bank, sorted."""
        return sorted(c for c, s in self.split.items() if s == split and self.labels[c])

    def singles(self, split: str, prompts: list[str], sources: dict[str, Path | PackedClip],
                cache: DecodeCache) -> list[tuple[str, str, functools.partial]]:
        """(clip_id, prompt, what decodes it) of the split's clips with one prompt and audio: mixture material."""
        return [(c, prompts[next(iter(self.labels[c]))], functools.partial(cache.get, c, sources[c]))
                for c in self.clips(split) if len(self.labels[c]) == 1 and c in sources]


class DecodeCache:
    """Decoded clips, the most recently drawn kept up to ``max_bytes``: a few thousand mixtures of a few hundred clips
    decode each clip once (ffmpeg's start costs more than a short clip's decoding), and a large split stays on disk."""

    def __init__(self, sample_rate: int, max_bytes: int = DECODE_CACHE_BYTES) -> None:
        self.sample_rate, self.max_bytes = sample_rate, max_bytes
        self.waves: OrderedDict[str, np.ndarray] = OrderedDict()
        self.held = 0

    def get(self, clip_id: str, source: Path | PackedClip) -> np.ndarray:
        """A clip's audio; an empty wave (left out by the mixtures as too short) when it cannot be decoded."""
        if clip_id in self.waves:
            self.waves.move_to_end(clip_id)
            return self.waves[clip_id]
        try:
            wave = decode(source, self.sample_rate)
        except A2IError as err:
            log.warning("label head: %s", first_line(err))
            wave = np.zeros(0, np.float32)
        self.waves[clip_id] = wave
        self.held += wave.nbytes
        while self.held > self.max_bytes and len(self.waves) > 1:
            self.held -= self.waves.popitem(last=False)[1].nbytes
        return wave


class Embedder:
    """Waves -> their mean window embeddings (n, D), with the mapper's audio encoder."""

    def __init__(self, encoder: AudioEncoder, device: torch.device, batch_size: int) -> None:
        self.encoder, self.device, self.batch_size = encoder, device, batch_size
        self.frontend = encoder.place(device)

    def means(self, waves: list[np.ndarray]) -> np.ndarray:
        frames = embed_waves(self.encoder, self.frontend, waves, self.batch_size, self.device)  # [(n_i, D)]
        return np.stack([f.mean(axis=0) for f in frames])  # (n, D)

    def mixtures(self, made: Iterable[tuple[np.ndarray, tuple[str, str]]],
                 ) -> Iterator[tuple[np.ndarray, tuple[str, str]]]:
        """(mean embedding (D,), (first, second)) of each mixture, embedded EMBED_MIXTURES at a time."""
        batch: list[tuple[np.ndarray, tuple[str, str]]] = []
        for item in made:
            batch.append(item)
            if len(batch) == EMBED_MIXTURES:
                yield from self._embedded(batch)
                batch = []
        yield from self._embedded(batch)

    def _embedded(self, batch: list[tuple[np.ndarray, tuple[str, str]]],
                  ) -> Iterator[tuple[np.ndarray, tuple[str, str]]]:
        if batch:
            yield from zip(self.means([w for w, _ in batch]), [p for _, p in batch], strict=True)


def label_head(cfg: LabelHeadParams, device: str, batch_size: int, candidates: Path, audio: Path,
               audio_features: Path, audio_encoder: Path, mapper_dir: Path, out: Path, metrics: Path) -> dict:
    """Train the head, write it into ``out`` and its headline numbers into ``metrics``; return them."""
    artifact = MapperArtifact.load(mapper_dir)
    prompts, provenance = artifact.prompts, artifact.mapper.config.provenance
    ids, means, part = load_audio_embeddings(audio_features)  # (n, D) clip means
    provenance.check(str(audio_features), **part)  # the features the mapper learnt from
    labels = Labels(candidates, prompts)
    row = {c: i for i, c in enumerate(ids)}
    train = [c for c in labels.clips("train") if c in row]
    if not train:
        raise A2IError(f"{candidates}: no train-split clip with features holds a prompt of the mapper's bank")
    x, y = means[[row[c] for c in train]], _targets([labels.labels[c] for c in train], len(prompts))
    encoder = encoder_for(provenance, audio_encoder)
    if encoder.dim != means.shape[1]:
        raise A2IError(f"{audio_encoder}: embeds {encoder.dim} wide, the features are {means.shape[1]} wide")
    embedder = Embedder(encoder, resolve_device(device), batch_size)
    sources, cache = dict(clip_sources(audio)), DecodeCache(encoder.sample_rate)
    mx, my = _mixture_rows(cfg, embedder, labels.singles("train", prompts, sources, cache), prompts)
    log.info("label head: %d train clips, %d mixtures", len(train), len(mx))
    # Clips and mixtures weigh half each, however many of each there are: trained mostly on mixtures, the head
    # learnt that a clip holds two sounds (6 of the demo's 8 single-sound test clips got a second layer).
    weights = np.concatenate([np.full(len(x), 0.5 / len(x)), np.full(len(mx), 0.5 / max(len(mx), 1))])
    head = fit_head(np.concatenate([x, mx]), np.concatenate([y, my]), prompts, audio_part(provenance),
                    cfg.weight_decay, cfg.seed, weights)
    val = [c for c in labels.clips("val") if c in row]
    numbers = {"val_top1": _top1(head, means[[row[c] for c in val]], [labels.labels[c] for c in val]),
               "val_recall_at_2": _recall_at_2(head, embedder, labels.singles("val", prompts, sources, cache),
                                               cfg.seed),
               "train_clips": len(train), "train_mixtures": len(mx)}
    head.save_pretrained(out)
    write_json(metrics, numbers)
    log.info("label head: val top-1 %s, val recall@2 on 0 dB mixtures %s", numbers["val_top1"],
             numbers["val_recall_at_2"])
    return numbers


def _targets(labels: list[set[int]], classes: int) -> np.ndarray:
    """(n, K) 0/1 rows, one per clip's label set."""
    y = np.zeros((len(labels), classes), np.float32)
    for i, ks in enumerate(labels):
        y[i, sorted(ks)] = 1
    return y


def _mixture_rows(cfg: LabelHeadParams, embedder: Embedder, singles: list, prompts: list[str],
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The training mixtures' mean embeddings (m, D) and their two-hot targets (m, K)."""
    dim, index = embedder.encoder.dim, {p: k for k, p in enumerate(prompts)}
    if cfg.mixtures and len({p for _, p, _ in singles}) < 2:
        log.warning("label head: no training mixtures: the train split's clips with one label and audio hold %d "
                    "class(es), and a mixture needs two", len({p for _, p, _ in singles}))
        return np.zeros((0, dim), np.float32), np.zeros((0, len(prompts)), np.float32)
    made = training_mixtures(singles, cfg.mixtures, cfg.min_db, cfg.max_db, cfg.seed, embedder.encoder.sample_rate)
    rows, pairs = [], []
    bar = tqdm(total=cfg.mixtures, desc="label_head: mixtures", unit="mix")
    for mean, pair in embedder.mixtures(made):
        rows.append(mean)
        pairs.append({index[p] for p in pair})
        bar.update(1)
    bar.close()
    x = np.stack(rows) if rows else np.zeros((0, dim), np.float32)
    return x, _targets(pairs, len(prompts))


def _top1(head: LabelHead, x: np.ndarray, labels: list[set[int]]) -> float | None:
    """The share of clips whose most probable prompt is one of theirs; None without clips."""
    if not labels:
        log.warning("label head: no val clips: val_top1 is null")
        return None
    best = head.probabilities(x).argmax(axis=1)  # (n,)
    return float(np.mean([int(k) in ks for k, ks in zip(best, labels, strict=True)]))


def _recall_at_2(head: LabelHead, embedder: Embedder, singles: list, seed: int) -> float | None:
    """Over VAL_MIXTURES 0 dB mixtures of val clips, the share of the two prompts among the head's best two."""
    classes = len({p for _, p, _ in singles})
    if classes < 2:
        log.warning("label head: val_recall_at_2 is null: the val split's clips with one label and audio hold %d "
                    "class(es), and a mixture needs two", classes)
        return None
    index = {p: k for k, p in enumerate(head.prompts)}
    made = training_mixtures(singles, VAL_MIXTURES, 0.0, 0.0, seed, embedder.encoder.sample_rate)
    hits = []
    for mean, pair in embedder.mixtures(made):
        hits.append(recall_at_2(head.probabilities(mean[None])[0], {index[p] for p in pair}))
    if not hits:
        log.warning("label head: val_recall_at_2 is null: no val mixture could be made (silent or short clips)")
        return None
    return float(np.mean(hits))
