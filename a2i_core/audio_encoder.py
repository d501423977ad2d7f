"""The frozen audio encoder as the pipeline runs it: VGGish (+ its postprocess), loaded from ``models/vggish``."""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from a2i_core.errors import A2IError, first_line
from a2i_core.fetch import sha256_file
from a2i_core.vggish import FRONTEND, Postprocessor, VGGish, load_postprocessor, load_vggish

if TYPE_CHECKING:
    from a2i_core.provenance import Provenance

WEIGHTS_FILE = "vggish.pth"
PCA_FILE = "pca.pth"
T = TypeVar("T")


class WeightsFileError(A2IError):
    """A weights or PCA file that is no plain tensor state dict, or does not fit VGGish; the message names it."""


@dataclass
class AudioEncoder:
    model: VGGish
    postprocessor: Postprocessor | None
    weights_sha256: str

    def provenance(self) -> dict[str, Any]:
        """The audio part of a provenance record: what makes these features these features."""
        return {"encoder_sha256": self.weights_sha256, "postprocess": self.postprocessor is not None,
                "frontend": FRONTEND}


def load_audio_encoder(directory: str | Path, postprocess: bool, shown_as: str | Path | None = None) -> AudioEncoder:
    """VGGish (and its PCA when ``postprocess``) from ``directory``; messages name it ``shown_as`` if given (the
    encoders stage checks a temporary directory before it becomes ``models/vggish``)."""
    directory = Path(directory)
    shown = Path(shown_as) if shown_as is not None else directory
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise A2IError(f"{shown / WEIGHTS_FILE}: not found (run the encoders stage: dvc repro encoders)")
    model = _load(weights_path, shown / WEIGHTS_FILE, load_vggish)
    post = None
    if postprocess:
        pca_path = directory / PCA_FILE
        if not pca_path.is_file():
            raise A2IError(f"{shown / PCA_FILE}: not found, but postprocess is on (rerun the encoders stage)")
        post = _load(pca_path, shown / PCA_FILE, load_postprocessor)
    return AudioEncoder(model, post, sha256_file(weights_path))


def encoder_for(trained: Provenance, directory: str | Path, postprocess: bool | None = None) -> AudioEncoder:
    """The local VGGish that embeds new sounds for a mapper trained on ``trained`` features, once checked against it.

    ``postprocess`` is the pipeline's setting (eval sets); None follows the mapper (generate). A mapper that learnt
    from AudioSet's released embeddings then takes the PCA only where the directory has one, so that a missing one
    is answered by ``Provenance.check``, which says what to set, rather than by a missing file.
    """
    directory = Path(directory)
    if postprocess is None:
        postprocess = trained.postprocess and (not trained.from_release or (directory / PCA_FILE).is_file())
    encoder = load_audio_encoder(directory, postprocess)
    trained.check(str(directory), **encoder.provenance())
    return encoder


def _load(path: Path, shown: Path, build: Callable[[dict[str, torch.Tensor]], T]) -> T:
    try:
        return build(read_state_dict(path))
    except A2IError as err:
        raise WeightsFileError(f"{shown}: {err}") from None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A file of named tensors, read by torch's safe unpickler only: a file from a URL or a pull is never run."""
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": noise beside the one-line answer
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # Its message advises weights_only=False, that is, running the file: never the advice for a file from outside.
        raise A2IError("not a plain tensor state dict (refused by the safe loader)") from None
    except Exception as err:  # a damaged zip, a truncated file: the safe unpickler raises many types
        reason = first_line(err)
        if "weights_only" in reason:  # torch's advice to unpickle unsafely, under another exception type
            raise A2IError("not a plain tensor state dict (refused by the safe loader)") from None
        raise A2IError(f"not a readable torch file ({reason})") from None
    if not (isinstance(state, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                            for k, v in state.items())):
        raise A2IError(f"not a plain tensor state dict (holds a {type(state).__name__} of other values)")
    return state
