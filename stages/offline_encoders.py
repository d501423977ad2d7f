"""encoders, as the offline demo runs it: SD3 and CLIP, tiny ones built in code and fitted to the synthetic classes'
prompts (stages/offline.dvc.yaml puts it in place of the real stage)."""

from a2i_core.core.errors import exit_cleanly, setup_logging
from a2i_core.core.params import load_params
from a2i_core.core.stage import stage_paths
from a2i_core.offline.encoders import build_encoders


@exit_cleanly
def main() -> None:
    setup_logging()
    paths = stage_paths("sd3", "clip")
    params = load_params()
    build_encoders(params.diffusion, params.evaluate, params.data, **paths)


if __name__ == "__main__":
    main()
