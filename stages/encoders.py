"""encoders: the frozen SD3 and CLIP that params name, pinned under models/."""

from a2i_core.core.errors import exit_cleanly, setup_logging
from a2i_core.core.params import load_params
from a2i_core.core.stage import stage_paths
from a2i_core.pipeline.encoders import prepare_encoders


@exit_cleanly
def main() -> None:
    setup_logging()
    paths = stage_paths("sd3", "clip")
    params = load_params()
    prepare_encoders(params.diffusion, params.evaluate, **paths)


if __name__ == "__main__":
    main()
