"""embed_audio: VGGish embeddings of every downloaded clip, in resumable Parquet shards; or, with
``audio_encoder.release``, AudioSet's released embeddings of the candidates' clips, imported into the same shards."""

from __future__ import annotations

from pathlib import Path

from a2i_core.audio.audioset_release import import_release
from a2i_core.audio.encoder import load_audio_encoder
from a2i_core.audio.features import embed_clips
from a2i_core.core.distributed import SOLO, World
from a2i_core.core.errors import A2IError
from a2i_core.core.manifest import clip_sources
from a2i_core.core.params import AudioEncoderParams


def embed_audio(cfg: AudioEncoderParams, audio: Path, audio_encoder: Path, features: Path, world: World = SOLO,
                candidates: Path | None = None) -> dict:
    if cfg.release is not None:
        if candidates is None:
            raise A2IError("embed_audio: audio_encoder.release is set, so the candidates table is needed")
        # Reading files is the work here, not a model: one process does it, the others wait for its shards.
        counts = import_release(Path(cfg.release), candidates, features, cfg.shard_rows) if world.is_main else {}
        world.barrier()
        return counts
    encoder = load_audio_encoder(audio_encoder, cfg.postprocess)
    return embed_clips(encoder, clip_sources(audio), features, batch_size=cfg.batch_size, shard_rows=cfg.shard_rows,
                       device=world.device(cfg.device), decode_workers=cfg.decode_workers, world=world)
