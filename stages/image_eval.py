"""image_eval: CLIP score and zero-shot class accuracy of every rendered row."""

from a2i_core.core.errors import exit_cleanly, setup_logging
from a2i_core.core.params import load_params
from a2i_core.core.stage import stage_paths
from a2i_core.pipeline.image_eval import image_eval


@exit_cleanly
def main() -> None:
    setup_logging()
    paths = stage_paths("images", "index", "reference_images", "reference_index", "text_features", "clip", "metrics",
                        "scores")
    image_eval(load_params().evaluate, **paths)


if __name__ == "__main__":
    main()
