"""What a mapper learnt from: one typed record, written with features and the mapper, checked in one place.

Audio features record how they were made (encoder weights, postprocess, frontend); text features record the
diffusion model and the shape of its sequence embedding. The trained mapper keeps both. Wherever features or
models meet a mapper (evaluate, render, eval sets, generate), :meth:`Provenance.check` compares them and a
mismatch names the field and both values: the mapper never saw such inputs. One exception: a mapper that learnt
from AudioSet's released embeddings takes the local VGGish with the same PCA in their place (see ``check``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from a2i_core.core.errors import A2IError
from a2i_core.core.fetch_file import SHA256
from a2i_core.core.typed import ParamsError, typed_from_dict

AUDIO_FIELDS = ("encoder_sha256", "postprocess", "frontend")
TEXT_FIELDS = ("diffusion_model", "sequence_shape")
METADATA_KEY = "provenance"  # the Parquet metadata key under which features store their part, as JSON

log = logging.getLogger(__name__)

# AudioSet's released embeddings: TensorFlow VGGish, PCA and 8-bit quantisation, one per 0.96 s. No weights file
# stands behind them here, so their encoder digest is that of this description: fixed, and like no weights file's.
RELEASE_FRONTEND = "audioset-release-v1: TensorFlow VGGish, PCA, 8-bit, 0.96 s"
RELEASE_ENCODER = hashlib.sha256(RELEASE_FRONTEND.encode()).hexdigest()
RELEASE_AUDIO = {"encoder_sha256": RELEASE_ENCODER, "postprocess": True, "frontend": RELEASE_FRONTEND}
RELEASE_NOTE = ("this mapper learnt from AudioSet's released embeddings (TensorFlow VGGish); new sounds are embedded "
                "by the local torch port with the same PCA: close, not identical")


ENCODER_NAMES = {"vggish": "VGGish", "clap": "CLAP", "ast": "AST"}


def encoder_kind(frontend: str) -> str:
    """vggish, clap or ast: the audio encoder a provenance's frontend description names first (AudioSet's released
    embeddings are VGGish's)."""
    return next((kind for kind in ENCODER_NAMES if frontend.startswith(kind)), "vggish")


class ProvenanceError(A2IError):
    pass


@dataclass(frozen=True)
class Provenance:
    encoder_sha256: str  # the audio encoder's weights
    postprocess: bool  # VGGish's PCA + 8-bit quantisation
    frontend: str  # the log-mel frontend's description (vggish.FRONTEND)
    diffusion_model: str  # "tiny", "hub-id@revision" or a local directory (hub.model_identity)
    sequence_shape: tuple[int, int]  # the diffusion model's (L, D) sequence embedding

    @classmethod
    def from_parts(cls, *parts: dict[str, Any]) -> Provenance:
        fields: dict[str, Any] = {}
        for part in parts:
            fields.update(part)
        return cls.from_json(fields, "provenance")

    @classmethod
    def from_json(cls, data: Any, what: str) -> Provenance:
        """The record from its JSON form; every field must be there with its type (a record that is not whole
        would silently check less)."""
        try:
            return typed_from_dict(cls, data, what)
        except ParamsError as err:
            raise ProvenanceError(f"{err} (rerun the stage that wrote it)") from None

    def validate(self, what: str) -> Provenance:
        """This record, if each field holds a value a real run records; else one line naming the field.

        A mapper's config.json is read from disk (a copy, a pull): an empty digest or frontend would still compare
        equal to another empty one, so a record that says nothing must not pass as one that matches.
        """
        problems = {
            "encoder_sha256": None if SHA256.fullmatch(self.encoder_sha256) else "must be 64 lowercase hex digits",
            "frontend": None if self.frontend.strip() else "must not be empty",
            "diffusion_model": None if self.diffusion_model.strip() else "must not be empty",
            "sequence_shape": None if all(n >= 1 for n in self.sequence_shape) else "must be two positive integers",
        }
        for name, problem in problems.items():
            if problem:
                raise ProvenanceError(f"{what}.{name}: {problem}, got {repr(getattr(self, name))[:80]}")
        return self

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "sequence_shape": list(self.sequence_shape)}

    @property
    def from_release(self) -> bool:
        """Whether these features, or the mapper's, are AudioSet's released embeddings."""
        return self.encoder_sha256 == RELEASE_ENCODER

    def check(self, what: str, **found: Any) -> None:
        """Refuse ``what`` when any of its ``found`` fields differs from this record (but see ``_stand_ins``)."""
        _check_names(found, what)
        for name, value in self._stand_ins(what, found).items():
            expected, actual = getattr(self, name), _typed(name, value, what)
            if actual != expected:
                raise ProvenanceError(f"{what}: {name} is {_show(actual)}, but the mapper was trained with "
                                      f"{_show(expected)}")

    def _stand_ins(self, what: str, found: dict[str, Any]) -> dict[str, Any]:
        """The ``found`` fields left to compare once the local VGGish stands in for the released embeddings.

        A mapper that learnt from the release meets the local VGGish wherever new sounds are embedded (generate, eval
        sets): the same network and PCA, ported from TensorFlow to torch, so it is accepted with the PCA on, and the
        difference is stated once. Without the PCA the features are another scale altogether: refused.
        """
        if not self.from_release or found.get("encoder_sha256", RELEASE_ENCODER) == RELEASE_ENCODER:
            return found
        if found.get("postprocess") is not True:
            raise ProvenanceError(f"{what}: this mapper learnt from AudioSet's released embeddings (PCA, 8-bit), but "
                                  "this VGGish has no PCA: set audio_encoder.postprocess: true, with pca naming its "
                                  "PCA file (as params.yaml does), then rerun the audio_encoder stage")
        note_once(RELEASE_NOTE)
        return {name: value for name, value in found.items() if name not in AUDIO_FIELDS}


@functools.cache
def note_once(message: str) -> None:
    """Log ``message`` the first time only: a process checks the same mapper in several places."""
    log.warning(message)


def to_metadata(part: dict[str, Any]) -> dict[str, str]:
    """A part of the record as Parquet metadata."""
    _check_names(part, "provenance")
    return {METADATA_KEY: json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in part.items()},
                                     sort_keys=True)}


def from_metadata(metadata: dict[str, str], what: str) -> dict[str, Any]:
    """The part of the record a table's metadata holds."""
    if METADATA_KEY not in metadata:
        raise ProvenanceError(f"{what}: no provenance recorded (an older a2i wrote it: rerun that stage)")
    part = json.loads(metadata[METADATA_KEY])
    _check_names(part, what)
    return {name: _typed(name, value, what) for name, value in part.items()}


def _check_names(data: dict, what: str) -> None:
    known = {f.name for f in dataclasses.fields(Provenance)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ProvenanceError(f"{what}: unknown provenance field {unknown[0]!r} (known: {', '.join(sorted(known))})")


def _typed(name: str, value: Any, what: str) -> Any:
    if name == "sequence_shape":
        if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(type(v) is int for v in value)):
            raise ProvenanceError(f"{what}: sequence_shape must be two integers, got {value!r}")
        return tuple(value)
    expected = bool if name == "postprocess" else str
    if type(value) is not expected:
        raise ProvenanceError(f"{what}: {name} must be a {expected.__name__}, got {value!r}")
    return value


def _show(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return f"{value[:12]}..."  # a sha256: enough to tell two apart
    return repr(value)
