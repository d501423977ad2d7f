"""timeline: test clips end to end with known boundaries, each made into a timeline, storyboard and (some) film as
`a2i timeline` makes them, scored with the sound-event-detection field's measures (sed_eval).

Spreads each film's frames over GPUs under torchrun; every frame is the same however it is run.
"""

from a2i_core.core.distributed import close_world, init_world
from a2i_core.core.errors import exit_cleanly, setup_logging
from a2i_core.core.params import load_params
from a2i_core.core.stage import stage_paths
from a2i_core.pipeline.timeline import timeline_eval


@exit_cleanly
def main() -> None:
    setup_logging()
    paths = stage_paths("candidates", "audio", "mapper_dir", "audio_encoder", "sd3", "clip", "recordings", "out",
                        "metrics", "report", "scores")
    params = load_params()
    world = init_world()
    timeline_eval(params.timeline, params.render, params.evaluate.device, world=world, **paths)
    close_world(world)


if __name__ == "__main__":
    main()
