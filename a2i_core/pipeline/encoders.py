"""encoders: the frozen SD3 and CLIP that params name, materialised (tiny ones are built).

On the offline profile (tiny models, synthetic sounds) the tiny SD3 and CLIP are also fitted to the sound classes'
prompts: SD3 paints one simple picture per prompt and CLIP recognises it, so the demo's images show whether a
sound steered them and image_eval measures that through the same code as a real run.
"""

from __future__ import annotations

from pathlib import Path

from a2i_core.core.params import DataParams, DiffusionParams, EvaluateParams
from a2i_core.data.sources.synthetic import class_prompt
from a2i_core.diffusion.prepare import prepare_clip, prepare_sd3
from a2i_core.offline import tiny
from a2i_core.offline.fit import fit_tiny_clip, fit_tiny_sd3


def prepare_encoders(diffusion: DiffusionParams, evaluate: EvaluateParams, data: DataParams, sd3: Path,
                     clip: Path) -> None:
    prompts = fitted_prompts(data)
    if not prompts:
        prepare_sd3(diffusion.model, sd3)
        prepare_clip(evaluate.clip_model, clip)
        return

    def build_sd3(directory: Path) -> None:
        tiny.save_tiny_sd3(directory)
        fit_tiny_sd3(directory, prompts, max_sequence_length=diffusion.max_sequence_length, use_t5=diffusion.use_t5)

    def build_clip(directory: Path) -> None:
        tiny.save_tiny_clip(directory)
        fit_tiny_clip(directory, prompts)

    prepare_sd3(diffusion.model, sd3, build_sd3)
    prepare_clip(evaluate.clip_model, clip, build_clip)


def fitted_prompts(data: DataParams) -> list[str]:
    """The prompts tiny models are fitted to: the synthetic classes' (the only prompts known before ingest); none
    for other sources, whose tiny models stay random."""
    if data.source != "synthetic":
        return []
    return [class_prompt(label, data.prompt_template) for label in data.synthetic.classes]
