"""embed_audio: VGGish embeddings of every downloaded clip, in resumable Parquet shards."""

from __future__ import annotations

from pathlib import Path

from a2i_core.audio_encoder import load_audio_encoder
from a2i_core.audio_features import embed_clips
from a2i_core.distributed import SOLO, World
from a2i_core.manifest import clip_sources
from a2i_core.params import AudioEncoderParams


def embed_audio(cfg: AudioEncoderParams, audio: Path, vggish: Path, features: Path, world: World = SOLO) -> dict:
    encoder = load_audio_encoder(vggish, cfg.postprocess)
    return embed_clips(encoder, clip_sources(audio), features, batch_size=cfg.batch_size, shard_rows=cfg.shard_rows,
                       device=world.device(cfg.device), decode_workers=cfg.decode_workers, world=world)
