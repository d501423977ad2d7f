"""The audio_encoder stage: the frozen audio encoder that params name, materialised under ``models/vggish``.

VGGish: ``audio_encoder.weights`` (and ``pca``) name ``tiny`` (built in code), a URL (with its full sha256) or a
local file; the folder holds ``vggish.pth`` (+ ``pca.pth``) and a ``source.json`` with their sha256. CLAP or AST:
``audio_encoder.checkpoint`` names ``tiny``, a Hub id or a local folder, built or pinned in ``source.json`` as SD3 is
(:func:`a2i_core.diffusion.prepare.prepare_pretrained`). Either is loaded once before it is put in place.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from a2i_core.audio import clap_ast
from a2i_core.audio.encoder import PCA_FILE, WEIGHTS_FILE, WeightsFileError, load_audio_encoder
from a2i_core.core.errors import A2IError
from a2i_core.core.fetch_file import fetch_file, sha256_file
from a2i_core.core.files import atomic_dir, write_text
from a2i_core.core.hub import SOURCE_FILE, TINY
from a2i_core.core.params import AudioEncoderParams
from a2i_core.core.urls import redact
from a2i_core.diffusion.prepare import prepare_pretrained
from a2i_core.offline import tiny


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

    build = clap_ast.save_tiny_clap if params.model == "clap" else clap_ast.save_tiny_ast
    return prepare_pretrained(str(params.checkpoint), out_dir, clap_ast.CONFIG_FILE, build, check)
