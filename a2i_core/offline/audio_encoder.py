"""audio_encoder as the offline demo runs it (``stages/offline.dvc.yaml``): where params name ``tiny``, VGGish's files,
CLAP or AST are built in code (:mod:`a2i_core.offline.tiny_audio`), then checked and put in place by the real
stage's own functions, so the folder is the one the real stage writes; anything else is the real stage's work."""

from __future__ import annotations

from pathlib import Path

import torch

from a2i_core.audio import prepare as audio_prepare
from a2i_core.core.fetch_file import sha256_file
from a2i_core.core.hub import TINY
from a2i_core.core.params import AudioEncoderParams
from a2i_core.offline.tiny import build_pretrained
from a2i_core.offline.tiny_audio import save_tiny_ast, save_tiny_clap, tiny_vggish_pca, tiny_vggish_weights


def build_audio_encoder(params: AudioEncoderParams, out_dir: str | Path) -> dict:
    """The audio_encoder stage, with ``tiny`` VGGish files, CLAP or AST built in code."""
    if params.model != "vggish":
        if params.checkpoint != TINY:
            return audio_prepare.prepare_audio_encoder(params, out_dir)
        save = save_tiny_clap if params.model == "clap" else save_tiny_ast
        return build_pretrained(out_dir, save, audio_prepare.checker(params))
    fetch = audio_prepare.fetcher(params)
    made = {"weights": (params.weights, tiny_vggish_weights), "pca": (params.pca, tiny_vggish_pca)}

    def put(role: str, dest: Path) -> tuple[str, str]:
        location, make = made[role]
        if location != TINY:
            return fetch(role, dest)
        torch.save(make(), dest)
        return TINY, sha256_file(dest)

    return audio_prepare.install_vggish(out_dir, params.postprocess, put)
