"""embed_text: SD3 text embeddings, once per unique prompt (and the empty prompt); spreads over GPUs under torchrun."""

from a2i_core.core.distributed import close_world, init_world
from a2i_core.core.errors import exit_cleanly, setup_logging
from a2i_core.core.params import load_params
from a2i_core.core.stage import stage_paths
from a2i_core.pipeline.embed_text import embed_text


@exit_cleanly
def main() -> None:
    setup_logging()
    paths = stage_paths("candidates", "sd3", "features", "metrics")
    cfg = load_params().diffusion
    world = init_world()
    embed_text(cfg, world=world, **paths)
    close_world(world)


if __name__ == "__main__":
    main()
