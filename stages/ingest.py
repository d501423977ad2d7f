"""ingest: source metadata -> the candidates table (one row per clip and label) and metrics/data.json."""

from a2i_core.core.errors import exit_cleanly, setup_logging
from a2i_core.core.params import load_params
from a2i_core.core.stage import stage_paths
from a2i_core.pipeline.ingest import ingest


@exit_cleanly
def main() -> None:
    setup_logging()
    paths = stage_paths("candidates", "metrics")
    ingest(load_params().data, **paths)


if __name__ == "__main__":
    main()
