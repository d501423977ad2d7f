"""encoders: the frozen VGGish, SD3 and CLIP that params name, materialised under models/ (tiny ones are built)."""

from a2i_core.encoders import prepare_clip, prepare_sd3, prepare_vggish
from a2i_core.errors import exit_cleanly, setup_logging
from a2i_core.params import load_params


@exit_cleanly
def main() -> None:
    setup_logging()
    params = load_params()
    prepare_vggish(params.audio_encoder, "models/vggish")
    prepare_sd3(params.diffusion.model, "models/sd3")
    prepare_clip(params.evaluate.clip_model, "models/clip")


if __name__ == "__main__":
    main()
