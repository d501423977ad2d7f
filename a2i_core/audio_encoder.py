"""The frozen audio encoder as the pipeline runs it: VGGish (+ its postprocess), loaded from ``models/vggish``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from a2i_core.errors import A2IError
from a2i_core.fetch import sha256_file
from a2i_core.vggish import FRONTEND, Postprocessor, VGGish, load_postprocessor, load_vggish

WEIGHTS_FILE = "vggish.pth"
PCA_FILE = "pca.pth"


@dataclass
class AudioEncoder:
    model: VGGish
    postprocessor: Postprocessor | None
    weights_sha256: str

    def provenance(self) -> dict[str, Any]:
        """The audio part of a provenance record: what makes these features these features."""
        return {"encoder_sha256": self.weights_sha256, "postprocess": self.postprocessor is not None,
                "frontend": FRONTEND}


def load_audio_encoder(directory: str | Path, postprocess: bool) -> AudioEncoder:
    directory = Path(directory)
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise A2IError(f"{weights_path}: not found (run the encoders stage: dvc repro encoders)")
    try:
        model = load_vggish(torch.load(weights_path, map_location="cpu", weights_only=True))
        post = None
        if postprocess:
            pca_path = directory / PCA_FILE
            if not pca_path.is_file():
                raise A2IError(f"{pca_path}: not found, but postprocess is on (rerun the encoders stage)")
            post = load_postprocessor(torch.load(pca_path, map_location="cpu", weights_only=True))
    except (RuntimeError, OSError, EOFError) as err:  # unpickling errors of a corrupt file
        raise A2IError(f"{directory}: cannot read VGGish weights: {str(err).splitlines()[0]}") from None
    return AudioEncoder(model, post, sha256_file(weights_path))
