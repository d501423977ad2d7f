"""audio_encoder, as the offline demo runs it: tiny VGGish, CLAP or AST built in code (stages/offline.dvc.yaml puts
it in place of the real stage)."""

from a2i_core.core.errors import exit_cleanly, setup_logging
from a2i_core.core.params import load_params
from a2i_core.core.stage import stage_paths
from a2i_core.offline.audio_encoder import build_audio_encoder


@exit_cleanly
def main() -> None:
    setup_logging()
    paths = stage_paths("out")
    build_audio_encoder(load_params().audio_encoder, paths["out"])


if __name__ == "__main__":
    main()
