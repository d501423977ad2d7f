"""The frozen audio encoder as the pipeline runs it, loaded from ``models/audio_encoder``: VGGish (+ its
postprocess), or CLAP's audio tower or AST (``a2i_core.audio.clap_ast``), each an :class:`AudioEncoder`."""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import torch
from torch import nn

from a2i_core.audio.clap_ast import CONFIG_FILE as HF_CONFIG_FILE
from a2i_core.audio.clap_ast import EXTRACTOR_FILE, PICKLE_WEIGHTS_FILE, load_hf_audio_encoder
from a2i_core.audio.clap_ast import WEIGHTS_FILE as HF_WEIGHTS_FILE
from a2i_core.audio.vggish import (
    EMBEDDING_DIM,
    EXAMPLE_FRAMES,
    FRONTEND,
    HOP,
    MIN_SAMPLES,
    SAMPLE_RATE,
    LogMelFrontend,
    Postprocessor,
    VGGish,
    load_postprocessor,
    load_vggish,
)
from a2i_core.core.errors import A2IError, first_line
from a2i_core.core.fetch_file import sha256_file
from a2i_core.core.files import read_json
from a2i_core.core.hub import SOURCE_FILE, hub_snapshot
from a2i_core.core.provenance import ENCODER_NAMES, ProvenanceError, encoder_kind

if TYPE_CHECKING:
    from a2i_core.core.provenance import Provenance

WEIGHTS_FILE = "vggish.pth"
PCA_FILE = "pca.pth"
HF_FILES = [HF_CONFIG_FILE, EXTRACTOR_FILE]  # and one weights file: safetensors where the repo has it
T = TypeVar("T")


class WeightsFileError(A2IError):
    """A weights or PCA file that is no plain tensor state dict, or does not fit VGGish; the message names it."""


class AudioEncoder(Protocol):
    """What embeds audio (VGGish, CLAP, AST): a waveform at ``sample_rate`` is cut into windows that start ``step``
    samples apart and read ``overlap`` samples past the next start; ``keeps_tail`` says whether what is left after the
    last whole window makes one more, and ``unheard`` how many samples at the end no window reads. ``place`` moves the
    model to a device and returns the frontend that turns windows into ``embed``'s inputs; ``embed`` gives one
    ``dim``-wide row per window."""

    kind: str
    sample_rate: int
    dim: int
    step: int
    overlap: int
    min_samples: int

    def keeps_tail(self, samples: int) -> bool: ...

    def unheard(self, samples: int) -> int: ...

    def place(self, device: torch.device) -> nn.Module: ...

    def embed(self, inputs: torch.Tensor) -> torch.Tensor: ...

    def provenance(self) -> dict[str, Any]: ...


@dataclass
class VGGishEncoder:
    """VGGish (+ its PCA postprocess), an :class:`AudioEncoder` with torchvggish's windows (0.96 s examples)."""

    model: VGGish
    postprocessor: Postprocessor | None
    weights_sha256: str
    kind = "vggish"
    sample_rate = SAMPLE_RATE
    dim = EMBEDDING_DIM
    step = EXAMPLE_FRAMES * HOP  # 15360 samples: examples start this far apart and do not overlap
    overlap = MIN_SAMPLES - EXAMPLE_FRAMES * HOP  # an example's last frame reads 240 samples past its hop
    min_samples = MIN_SAMPLES  # the shortest waveform that fills one example without padding

    def keeps_tail(self, samples: int) -> bool:
        """A tail makes an example only if it holds one whole (the frontend drops shorter ones)."""
        return samples >= MIN_SAMPLES

    def unheard(self, samples: int) -> int:
        """Samples after the last whole example (a shorter clip is padded, so all of it is heard)."""
        return 0 if samples < MIN_SAMPLES else (samples - MIN_SAMPLES) % self.step

    def place(self, device: torch.device) -> LogMelFrontend:
        """Move VGGish (channels-last: faster convolutions) and its postprocessor to ``device``; the frontend to
        feed ``embed`` with."""
        self.model.to(device, memory_format=torch.channels_last)
        if self.postprocessor is not None:
            self.postprocessor.to(device)
        return LogMelFrontend().to(device)

    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        """(n, 1, 96, 64) log-mel examples -> (n, 128) embeddings (postprocessed when the PCA is loaded)."""
        emb = self.model(inputs.contiguous(memory_format=torch.channels_last))  # the conv kernels' fast layout
        return emb if self.postprocessor is None else self.postprocessor(emb)

    def provenance(self) -> dict[str, Any]:
        """The audio part of a provenance record: what makes these features these features."""
        return {"encoder_sha256": self.weights_sha256, "postprocess": self.postprocessor is not None,
                "frontend": FRONTEND}



def load_audio_encoder(directory: str | Path, postprocess: bool, shown_as: str | Path | None = None) -> AudioEncoder:
    """The audio encoder in ``directory``: CLAP or AST where it holds a transformers model (config.json), else
    VGGish (and its PCA when ``postprocess``); messages name it ``shown_as`` if given (the audio_encoder stage checks a
    temporary directory before it becomes ``models/audio_encoder``)."""
    directory = Path(directory)
    shown = Path(shown_as) if shown_as is not None else directory
    folder = _transformers_folder(directory)
    if folder is not None:
        # A local checkpoint's record holds the folder the user named, resolved: name it once (a Hub id shows its
        # snapshot beside it).
        named = folder == directory or Path(shown).resolve() == folder.resolve()
        return load_hf_audio_encoder(folder, shown if named else f"{shown} ({folder})")
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise A2IError(f"{shown / WEIGHTS_FILE}: not found (run the audio_encoder stage: dvc repro audio_encoder)")
    model = _load(weights_path, shown / WEIGHTS_FILE, load_vggish)
    post = None
    if postprocess:
        pca_path = directory / PCA_FILE
        if not pca_path.is_file():
            raise A2IError(f"{shown / PCA_FILE}: not found, but postprocess is on (rerun the audio_encoder stage)")
        post = _load(pca_path, shown / PCA_FILE, load_postprocessor)
    return VGGishEncoder(model, post, sha256_file(weights_path))


def _transformers_folder(directory: Path) -> Path | None:
    """Where a CLAP or AST model's files are: ``directory`` itself (tiny, or a copy), the local folder or the Hub
    snapshot its ``source.json`` pins (the audio_encoder stage's record, as for SD3); None for VGGish."""
    if (directory / HF_CONFIG_FILE).is_file():
        return directory
    source = directory / SOURCE_FILE
    record = read_json(source) if source.is_file() else None
    if not (isinstance(record, dict) and isinstance(record.get("model"), str)):
        return None  # VGGish's record names its files instead
    if record.get("revision") is None:
        return Path(record["model"])
    model, revision = record["model"], record["revision"]
    folder = hub_snapshot(model, revision, files=[*HF_FILES, HF_WEIGHTS_FILE], what="audio encoder")
    if not (folder / HF_WEIGHTS_FILE).is_file():  # a repo of pickled weights only (read safely)
        folder = hub_snapshot(model, revision, files=[*HF_FILES, PICKLE_WEIGHTS_FILE], what="audio encoder")
    return folder


def encoder_for(trained: Provenance, directory: str | Path, postprocess: bool | None = None) -> AudioEncoder:
    """The local audio encoder that embeds new sounds for a mapper trained on ``trained`` features, once checked
    against it.

    ``postprocess`` is the pipeline's setting (eval sets); None follows the mapper (generate). A mapper that learnt
    from AudioSet's released embeddings then takes the PCA only where the directory has one, so that a missing one
    is answered by ``Provenance.check``, which says what to set, rather than by a missing file.
    """
    directory = Path(directory)
    if postprocess is None:
        postprocess = trained.postprocess and (not trained.from_release or (directory / PCA_FILE).is_file())
    encoder = load_audio_encoder(directory, postprocess)
    learnt = encoder_kind(trained.frontend)
    if encoder.kind != learnt:  # before the field-by-field check, whose sha256s would not say what differs
        raise ProvenanceError(f"{directory}: holds {ENCODER_NAMES[encoder.kind]}, but the mapper learnt from "
                              f"{ENCODER_NAMES[learnt]} features (rerun the audio_encoder stage, or pass "
                              "--audio-encoder)")
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
