"""check_params: every key of params.yaml validated whenever the file changes, before any other stage runs on it.

The other stages declare only the keys they read, so a misspelled section (``trian:``) or an unknown top-level key
would change no stage's inputs and ``dvc repro`` would say that all is up to date. This stage depends on the whole
file, so DVC runs it on any change, and it stops with one line naming the bad key.
"""

from a2i_core.core.errors import exit_cleanly, setup_logging
from a2i_core.core.params import load_params
from a2i_core.core.stage import stage_paths


@exit_cleanly
def main() -> None:
    setup_logging()
    load_params(stage_paths("params")["params"])


if __name__ == "__main__":
    main()
