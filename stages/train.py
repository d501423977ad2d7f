"""train: fit the mapper on the train split, early-stopped on val -> the mapper artifact, metrics and curves."""

from a2i_core.core.errors import exit_cleanly, setup_logging
from a2i_core.core.params import load_params
from a2i_core.core.stage import stage_paths
from a2i_core.pipeline.train import train


@exit_cleanly
def main() -> None:
    setup_logging()
    paths = stage_paths("candidates", "audio_features", "text_features", "out", "metrics", "curves", "curves_chart")
    params = load_params()
    train(params.mapper, params.train, **paths)


if __name__ == "__main__":
    main()
