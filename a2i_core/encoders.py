"""The audio_encoder and encoders stages: the frozen audio encoder (VGGish, CLAP or AST), SD3 and CLIP that params
name, materialised under ``models/``.

``audio_encoder.weights`` (VGGish), ``audio_encoder.checkpoint`` (CLAP, AST), ``diffusion.model`` and
``evaluate.clip_model`` each name either ``tiny`` (built in code for the offline profile), a URL or local file
(VGGish), or a Hub id or local directory (the others). They write:

- ``models/vggish/``: ``vggish.pth`` (+ ``pca.pth``) and ``source.json`` with their sha256; or CLAP's or AST's
  tiny model itself, or a ``source.json`` pinning its Hub id or folder, as for SD3;
- ``models/sd3/``, ``models/clip/``: the tiny model itself, or a ``source.json`` pinning a Hub id to the revision
  resolved now, so that dvc.lock records exactly which snapshot the features and images came from.

Downstream stages load through :mod:`a2i_core.audio_encoder` and :mod:`a2i_core.hub` only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from a2i_core import hf_audio, tiny
from a2i_core.audio_encoder import PCA_FILE, WEIGHTS_FILE, WeightsFileError, load_audio_encoder
from a2i_core.errors import A2IError
from a2i_core.fetch import fetch_file, sha256_file
from a2i_core.files import atomic_dir, write_text
from a2i_core.hub import SD3_MARKER, SOURCE_FILE, TINY, hub_revision, write_source
from a2i_core.params import AudioEncoderParams
from a2i_core.urls import redact


def prepare_vggish(params: AudioEncoderParams, out_dir: str | Path) -> dict:
    """Fetch or build VGGish (and its PCA) into ``out_dir`` with a ``source.json``; a file that fails its sha256 or the
    safe loader is refused in one line and never appears there."""
    out_dir = Path(out_dir)
    files = {"weights": (WEIGHTS_FILE, params.weights, params.weights_sha256)}
    if params.postprocess:
        files["pca"] = (PCA_FILE, params.pca, params.pca_sha256)
    record: dict[str, dict] = {}
    with atomic_dir(out_dir) as tmp:  # out_dir is replaced only once every file has loaded
        for role, (name, location, sha256) in files.items():
            if location == TINY:
                torch.save(tiny.tiny_vggish_weights() if role == "weights" else tiny.tiny_vggish_pca(), tmp / name)
                digest = sha256_file(tmp / name)
            else:
                digest = fetch_file(location, tmp / name, sha256)
            # source.json is a DVC output (pushed to the team's remote): never a password or a signed query.
            record[role] = {"file": name, "source": redact(location), "sha256": digest}
        # Load once now, so a wrong file fails here rather than in a later stage.
        try:
            load_audio_encoder(tmp, params.postprocess, shown_as=out_dir)
        except WeightsFileError as err:
            raise A2IError(f"{err}: removed") from None
        write_text(tmp / SOURCE_FILE, json.dumps(record, indent=2) + "\n")
    return record


def prepare_audio_encoder(params: AudioEncoderParams, out_dir: str | Path) -> dict:
    """VGGish (``prepare_vggish``), or CLAP or AST built tiny or pinned like SD3; loaded once before it is put in
    place, so that a folder of another model or a broken one fails here, in one line."""
    if params.model == "vggish":
        return prepare_vggish(params, out_dir)

    def check(tmp: Path) -> None:
        kind = load_audio_encoder(tmp, postprocess=False, shown_as=params.checkpoint).kind
        if kind != params.model:
            raise A2IError(f"audio_encoder.checkpoint {params.checkpoint}: holds a {kind} model, but "
                           f"audio_encoder.model is {params.model}")

    build = hf_audio.save_tiny_clap if params.model == "clap" else hf_audio.save_tiny_ast
    return prepare_pretrained(str(params.checkpoint), out_dir, hf_audio.CONFIG_FILE, build, check)


def prepare_pretrained(model: str, out_dir: str | Path, marker: str, build_tiny: Callable[[Path], None],
                       check: Callable[[Path], None] | None = None) -> dict:
    """Build the tiny model into ``out_dir``, or pin a Hub id / local directory in ``source.json``; ``check``
    (when given) sees the folder before it is put in place.

    ``marker`` is the file that makes a directory a saved model of this kind (model_index.json, config.json).
    """
    if model == TINY:
        record = {"model": TINY, "revision": None}
    elif Path(model).is_dir():
        if not (Path(model) / marker).is_file():
            raise A2IError(f"{model}: not a saved model directory (no {marker})")
        record = {"model": str(Path(model).resolve()), "revision": None}
    else:
        record = {"model": model, "revision": hub_revision(model)}
    with atomic_dir(out_dir) as tmp:  # a reader never finds it half-built
        if model == TINY:
            build_tiny(tmp)
        write_source(tmp, record)
        if check is not None:
            check(tmp)
    return record


def prepare_sd3(model: str, out_dir: str | Path, build_tiny: Callable[[Path], None] = tiny.save_tiny_sd3) -> dict:
    return prepare_pretrained(model, out_dir, SD3_MARKER, build_tiny)


def prepare_clip(model: str, out_dir: str | Path, build_tiny: Callable[[Path], None] = tiny.save_tiny_clip) -> dict:
    return prepare_pretrained(model, out_dir, "config.json", build_tiny)
