"""download: every candidate clip as 16 kHz mono audio plus its manifest, and (download.frames) each evaluated clip's
source frame; a rerun fetches only what is missing."""

from a2i_core.core.errors import exit_cleanly, setup_logging
from a2i_core.core.params import load_params
from a2i_core.core.stage import stage_paths
from a2i_core.pipeline.download import download


@exit_cleanly
def main() -> None:
    setup_logging()
    paths = stage_paths("candidates", "audio", "frames", "metrics")
    params = load_params()
    download(params.download, release=params.audio_encoder.release, **paths)


if __name__ == "__main__":
    main()
