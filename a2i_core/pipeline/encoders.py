"""encoders: the frozen SD3 and CLIP that params name (Hub ids or local folders), pinned under models/.

The offline demo replaces this stage with its own (stages/offline.dvc.yaml), which builds tiny models."""

from __future__ import annotations

from pathlib import Path

from a2i_core.core.params import DiffusionParams, EvaluateParams
from a2i_core.diffusion.prepare import prepare_clip, prepare_sd3


def prepare_encoders(diffusion: DiffusionParams, evaluate: EvaluateParams, sd3: Path, clip: Path) -> None:
    prepare_sd3(diffusion.model, sd3)
    prepare_clip(evaluate.clip_model, clip)
