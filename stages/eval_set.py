"""eval_set@NAME: the trained mapper on an extra evaluation set (ESC-50 per official fold, AudioCaps, VGGSound, a
folder), without the set's rows from videos the main pipeline's candidates (--candidates) trained on."""

from a2i_core.core.errors import A2IError, exit_cleanly, setup_logging
from a2i_core.core.params import load_params
from a2i_core.core.stage import stage_paths
from a2i_core.pipeline.eval_set import eval_set


@exit_cleanly
def main() -> None:
    setup_logging()
    paths = stage_paths("mapper_dir", "audio_encoder", "sd3", "clip", "candidates", "out", "metrics", "report",
                        "table", positional=("name",))
    params = load_params()
    if paths["name"] not in params.eval_sets:
        raise A2IError(f"no eval set {paths['name']!r} in params.yaml eval_sets (known: {', '.join(params.eval_sets)})")
    eval_set(params, **paths)


if __name__ == "__main__":
    main()
