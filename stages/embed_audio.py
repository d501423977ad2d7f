"""embed_audio: VGGish embeddings of every downloaded clip -> data/features/audio/part-*.parquet.

Resumable (finished shards are kept), and spreads over GPUs when launched with torchrun (params: launch).
"""

from pathlib import Path

from a2i_core.audio_features import embed_clips
from a2i_core.distributed import close_world, init_world
from a2i_core.download import clip_sources
from a2i_core.encoders import load_audio_encoder
from a2i_core.errors import exit_cleanly, setup_logging
from a2i_core.params import load_params

AUDIO_DIR = Path("data/audio")
OUT_DIR = Path("data/features/audio")


@exit_cleanly
def main() -> None:
    setup_logging()
    cfg = load_params().audio_encoder
    world = init_world()
    encoder = load_audio_encoder("models/vggish", cfg.postprocess)
    embed_clips(encoder, clip_sources(AUDIO_DIR), OUT_DIR,
                batch_size=cfg.batch_size, shard_rows=cfg.shard_rows, device=world.device(cfg.device),
                decode_workers=cfg.decode_workers, world=world,
                metadata={"encoder_sha256": encoder.weights_sha256, "postprocess": str(cfg.postprocess).lower()})
    close_world(world)


if __name__ == "__main__":
    main()
