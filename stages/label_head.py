"""label_head: a multi-label classifier over the mapper's prompt bank, trained on the train split's clips and on seeded
two-source mixtures of them; `layers.answer: head` reads it to tell which sounds a clip holds.

Params read: layers.head (mixtures, min_db, max_db, weight_decay, seed), audio_encoder.device and
audio_encoder.batch_size (embedding the mixtures).
"""

from a2i_core.core.errors import exit_cleanly, setup_logging
from a2i_core.core.params import load_params
from a2i_core.core.stage import stage_paths
from a2i_core.pipeline.label_head import label_head


@exit_cleanly
def main() -> None:
    setup_logging()
    paths = stage_paths("candidates", "audio", "audio_features", "audio_encoder", "mapper_dir", "out", "metrics")
    params = load_params()
    label_head(params.layers.head, params.audio_encoder.device, params.audio_encoder.batch_size, **paths)


if __name__ == "__main__":
    main()
