"""encoders: the frozen VGGish, SD3 and CLIP that params name, materialised (tiny ones are built)."""

from __future__ import annotations

from pathlib import Path

from a2i_core.encoders import prepare_clip, prepare_sd3, prepare_vggish
from a2i_core.params import AudioEncoderParams, DiffusionParams, EvaluateParams


def prepare_encoders(audio_encoder: AudioEncoderParams, diffusion: DiffusionParams, evaluate: EvaluateParams,
                     vggish: Path, sd3: Path, clip: Path) -> None:
    prepare_vggish(audio_encoder, vggish)
    prepare_sd3(diffusion.model, sd3)
    prepare_clip(evaluate.clip_model, clip)
