"""ingest: source metadata -> data/candidates.parquet (one row per clip and label) and metrics/data.json."""

from a2i_core import shards
from a2i_core.errors import exit_cleanly, setup_logging
from a2i_core.files import write_json
from a2i_core.ingest import CANDIDATES_KIND, build_candidates, candidates_table, data_counts
from a2i_core.params import load_params


@exit_cleanly
def main() -> None:
    setup_logging()
    params = load_params()
    candidates, report = build_candidates(params.data)
    shards.write_table(candidates_table(candidates), "data/candidates.parquet", CANDIDATES_KIND)
    write_json("metrics/data.json", {**data_counts(candidates), **report})


if __name__ == "__main__":
    main()
