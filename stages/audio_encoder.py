"""audio_encoder: the frozen audio encoder that params name (VGGish, CLAP or AST), materialised under models/.

A stage of its own: changing the audio encoder reruns embed_audio and what follows, never SD3's stage. ``--pins``
is the git-tracked file where a weights or PCA URL without a sha256 in params is pinned on its first download."""

from a2i_core.audio.prepare import prepare_audio_encoder
from a2i_core.core.errors import exit_cleanly, setup_logging
from a2i_core.core.params import load_params
from a2i_core.core.stage import stage_paths


@exit_cleanly
def main() -> None:
    setup_logging()
    paths = stage_paths("pins", "out")
    prepare_audio_encoder(load_params().audio_encoder, paths["out"], paths["pins"])


if __name__ == "__main__":
    main()
