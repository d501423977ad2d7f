"""embed_audio: VGGish embeddings of every downloaded clip, in resumable shards; spreads over GPUs under torchrun.
With audio_encoder.release set, AudioSet's released embeddings of the candidates' clips instead."""

from a2i_core.core.distributed import close_world, init_world
from a2i_core.core.errors import exit_cleanly, setup_logging
from a2i_core.core.params import load_params
from a2i_core.core.stage import stage_paths
from a2i_core.pipeline.embed_audio import embed_audio


@exit_cleanly
def main() -> None:
    setup_logging()
    paths = stage_paths("audio", "audio_encoder", "features", "candidates")
    cfg = load_params().audio_encoder
    world = init_world()
    embed_audio(cfg, world=world, **paths)
    close_world(world)


if __name__ == "__main__":
    main()
