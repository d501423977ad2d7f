"""sources: fingerprints of the local files params name, so that a change to them reruns the stages that read them."""

from a2i_core.core.errors import exit_cleanly, setup_logging
from a2i_core.core.params import load_params
from a2i_core.core.stage import stage_paths
from a2i_core.pipeline.sources import sources


@exit_cleanly
def main() -> None:
    setup_logging()
    sources(load_params(), **stage_paths("out"))


if __name__ == "__main__":
    main()
