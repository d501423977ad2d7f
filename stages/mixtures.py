"""mixtures: seeded two-source mixtures of test clips (each level ratio, and hard-panned ones), answered and drawn
with layers as `a2i generate --layers` draws them, scored beside the single embedding's answer and image."""

from a2i_core.core.errors import exit_cleanly, setup_logging
from a2i_core.core.params import load_params
from a2i_core.core.stage import stage_paths
from a2i_core.pipeline.mixtures import mixtures_eval


@exit_cleanly
def main() -> None:
    setup_logging()
    paths = stage_paths("candidates", "audio", "mapper_dir", "audio_encoder", "sd3", "clip", "label_head", "mixtures",
                        "images", "metrics", "report", "scores", "sheet")
    params = load_params()
    mixtures_eval(params.layers, params.render, params.evaluate.device, **paths)


if __name__ == "__main__":
    main()
