"""render_reference: the rows no mapper takes part in (true prompt, mean baseline) for the clips render draws, an
index and timings: an experiment on the mapper alone leaves them as they are.

Spreads over GPUs under torchrun; every image is the same however it is run.
"""

from a2i_core.core.distributed import close_world, init_world
from a2i_core.core.errors import exit_cleanly, setup_logging
from a2i_core.core.params import load_params
from a2i_core.core.stage import stage_paths
from a2i_core.pipeline.render import render_reference


@exit_cleanly
def main() -> None:
    setup_logging()
    paths = stage_paths("candidates", "audio_features", "text_features", "sd3", "images", "index", "metrics")
    cfg = load_params().render
    world = init_world()
    render_reference(cfg, world=world, **paths)
    close_world(world)


if __name__ == "__main__":
    main()
