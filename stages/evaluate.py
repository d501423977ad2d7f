"""evaluate: the mapper on held-out pairs (test, held-out classes) beside the mean-embedding baseline."""

from a2i_core.core.errors import exit_cleanly, setup_logging
from a2i_core.core.params import load_params
from a2i_core.core.stage import stage_paths
from a2i_core.pipeline.evaluate import evaluate


@exit_cleanly
def main() -> None:
    setup_logging()
    paths = stage_paths("mapper_dir", "candidates", "audio_features", "text_features", "metrics", "report",
                        "per_class", "per_class_chart")
    evaluate(load_params().train, **paths)


if __name__ == "__main__":
    main()
