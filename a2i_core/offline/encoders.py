"""encoders as the offline demo runs it (``stages/offline.dvc.yaml``): where params name ``tiny``, SD3 and CLIP are
built in code (:mod:`a2i_core.offline.tiny`) and, on the synthetic source, fitted to the classes' prompts
(:mod:`a2i_core.offline.fit`): SD3 paints one simple picture per prompt and CLIP recognises it, so the demo's images
show whether a sound steered them and image_eval measures that through the same code as a real run. Anything else is
the real stage's work, done by its own functions. Only the demo's workspace runs this: editing the offline package
reruns nothing in a project whose dvc.yaml is the real one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from a2i_core.core.hub import TINY
from a2i_core.core.params import DataParams, DiffusionParams, EvaluateParams
from a2i_core.data.sources.synthetic import class_prompt
from a2i_core.diffusion import prepare as diffusion_prepare
from a2i_core.offline import tiny
from a2i_core.offline.fit import fit_tiny_clip, fit_tiny_sd3


def build_sd3(model: str, out_dir: str | Path, prompts: Sequence[str] = (), max_sequence_length: int = 77,
              use_t5: bool = True) -> dict:
    """SD3 for the encoders stage: ``tiny`` is built and, given ``prompts``, fitted to paint them."""
    if model != TINY:
        return diffusion_prepare.prepare_sd3(model, out_dir)

    def build(directory: Path) -> None:
        tiny.save_tiny_sd3(directory)
        if prompts:
            fit_tiny_sd3(directory, list(prompts), max_sequence_length=max_sequence_length, use_t5=use_t5)

    return tiny.build_pretrained(out_dir, build)


def build_clip(model: str, out_dir: str | Path, prompts: Sequence[str] = ()) -> dict:
    """CLIP for the encoders stage: ``tiny`` is built and, given ``prompts``, fitted to recognise their pictures."""
    if model != TINY:
        return diffusion_prepare.prepare_clip(model, out_dir)

    def build(directory: Path) -> None:
        tiny.save_tiny_clip(directory)
        if prompts:
            fit_tiny_clip(directory, list(prompts))

    return tiny.build_pretrained(out_dir, build)


def build_encoders(diffusion: DiffusionParams, evaluate: EvaluateParams, data: DataParams, sd3: Path,
                   clip: Path) -> None:
    """The encoders stage: SD3 and CLIP, tiny ones fitted to the synthetic classes' prompts."""
    prompts = fitted_prompts(data)
    build_sd3(diffusion.model, sd3, prompts, diffusion.max_sequence_length, diffusion.use_t5)
    build_clip(evaluate.clip_model, clip, prompts)


def fitted_prompts(data: DataParams) -> list[str]:
    """The prompts tiny models are fitted to: the synthetic classes' (the only prompts known before ingest); none
    for other sources, whose tiny models stay random."""
    if data.source != "synthetic":
        return []
    return [class_prompt(label, data.prompt_template) for label in data.synthetic.classes]
