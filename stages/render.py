"""render: the mapper's images of the clips render_reference drew (one row per sequence fill, and one with each
clip's sounds drawn as layers), an index and timings, and the contact sheet of every row, the reference rows
included.

Spreads over GPUs under torchrun; every image is the same however it is run.
"""

from a2i_core.core.distributed import close_world, init_world
from a2i_core.core.errors import exit_cleanly, setup_logging
from a2i_core.core.params import load_params
from a2i_core.core.stage import stage_paths
from a2i_core.pipeline.render_rows import render_rows


@exit_cleanly
def main() -> None:
    setup_logging()
    paths = stage_paths("mapper_dir", "label_head", "candidates", "audio_features", "text_features", "sd3",
                        "reference_images", "reference_index", "images", "sheet", "index", "metrics")
    params = load_params()
    world = init_world()
    render_rows(params.render, params.layers, world=world, **paths)
    close_world(world)


if __name__ == "__main__":
    main()
