"""download: every candidate clip as a 16 kHz mono file in data/audio/, plus data/audio/manifest.parquet.

The output is persistent: a rerun (or a run after Ctrl-C) only fetches what is missing.
"""

from a2i_core import shards
from a2i_core.download import download_clips
from a2i_core.errors import exit_cleanly, setup_logging
from a2i_core.files import write_json
from a2i_core.ingest import CANDIDATES_KIND
from a2i_core.params import load_params


@exit_cleanly
def main() -> None:
    setup_logging()
    cfg = load_params().download
    candidates = shards.read_table("data/candidates.parquet", CANDIDATES_KIND).to_pandas()
    counts = download_clips(candidates, "data/audio", cfg)
    write_json("metrics/download.json", counts)


if __name__ == "__main__":
    main()
